"""Fixture text → validated `HostTemplate`s: the state builder of winlab.

`load_templates_text` parses fixture YAML (`winlab.fixture_yaml`, line marks from the
inventory's loader), validates it with the pydantic models of `winlab.fixture_schema`, and
builds each host's initial `HostState` plus its prepared installer behaviour
(`winlab.installers`). Log contents are stored as bytes in the host's encoding (`text:`/`source:`
with `encoding:`), or generated lazily on disk (`generate:`) for scale tests. Every error is a
`FixtureError` naming the file, the line and the field. Hosts are made from templates by
`winlab.fixtures` (the factory); this module never imports a host.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from winlab.faults import Faults
from winlab.fixture_errors import FixtureError, dotted, line_for
from winlab.fixture_schema import (
    Encoding,
    FileModel,
    FixtureFileModel,
    HostModel,
    PatchModel,
    ProductModel,
    RegTypedModel,
    SetsModel,
)
from winlab.fixture_yaml import parse_yaml
from winlab.generated_logs import GeneratedContent
from winlab.hoststate import (
    DEFAULT_MTIME,
    BytesContent,
    Content,
    FileEntry,
    HostState,
    OsInfo,
    PatchSpec,
    ProductSpec,
    RegData,
    RegType,
    WsusUpdate,
    norm_key,
    norm_path,
)
from winlab.installers import Changes, InstallerBehaviour
from winlab.power import BootSpec

# --- building state --------------------------------------------------------------------------


def encode_text(text: str, encoding: Encoding, culture_codec: str, newline: str = "crlf") -> bytes:
    """Encode log text as the host stores it: utf-16le/utf-16be with BOM, utf-8 without BOM,
    utf-8-bom, or ansi (the culture's codepage). `newline` crlf/lf/keep. Raises UnicodeEncodeError."""
    if newline != "keep":
        text = text.replace("\r\n", "\n")
        if newline == "crlf":
            text = text.replace("\n", "\r\n")
    if encoding == "utf-16le":
        return b"\xff\xfe" + text.encode("utf-16-le")
    if encoding == "utf-16be":
        return b"\xfe\xff" + text.encode("utf-16-be")
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    if encoding == "ansi":
        return text.encode(culture_codec)
    return text.encode("utf-8")


@dataclass(frozen=True)
class _Ctx:
    source: str
    base_dir: Path | None
    marks: Mapping[tuple[Any, ...], int]
    culture_codec: str

    def error(self, loc: tuple[Any, ...], message: str) -> FixtureError:
        return FixtureError(self.source, line_for(loc, self.marks), dotted(loc), message)


def _content(fm: FileModel, ctx: _Ctx, loc: tuple[Any, ...]) -> Content | None:
    if fm.generate is not None:
        g = fm.generate
        return GeneratedContent(g.size_mb, g.seed, g.matches, fm.encoding, ctx.culture_codec)
    if fm.data_b64 is not None:
        try:
            return BytesContent(base64.b64decode(fm.data_b64, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ctx.error((*loc, "data_b64"), "not valid base64") from exc
    text: str | None = fm.text
    if fm.source is not None:
        if ctx.base_dir is None:
            raise ctx.error((*loc, "source"), "source: needs a fixture file (not a string)")
        rel = Path(fm.source.replace("\\", "/"))
        if rel.is_absolute():
            raise ctx.error((*loc, "source"), "source: must be relative to the fixture file")
        src = (ctx.base_dir / rel).resolve()
        if not src.is_file():
            raise ctx.error((*loc, "source"), f"source file not found: {src}")
        if fm.encoding == "raw":
            return BytesContent(src.read_bytes())
        try:
            text = src.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ctx.error((*loc, "source"), f"source file is not UTF-8 text (use encoding: raw): {exc}") from exc
    if text is None:
        return None
    if fm.encoding == "raw":
        raise ctx.error((*loc, "encoding"), "encoding raw needs source:")
    try:
        return BytesContent(encode_text(text, fm.encoding, ctx.culture_codec, fm.newline))
    except UnicodeEncodeError as exc:
        raise ctx.error((*loc, "encoding"), f"text cannot be encoded as {fm.encoding}: {exc.reason}") from exc


def _file_entry(path: str, fm: FileModel, ctx: _Ctx, loc: tuple[Any, ...]) -> FileEntry:
    mtime = fm.mtime or DEFAULT_MTIME
    if mtime.tzinfo is None:
        mtime = mtime.replace(tzinfo=timezone.utc)
    return FileEntry(
        path=norm_path(path),
        content=_content(fm, ctx, loc),
        version=fm.version,
        version_string=fm.version_string or fm.version,
        product_version=fm.product_version or fm.version,
        mtime=mtime,
    )


def _reg_value(v: Any) -> tuple[RegData, RegType | None]:
    if isinstance(v, RegTypedModel):
        data: RegData = v.value
        if v.type == "REG_BINARY" and isinstance(v.value, str):
            data = base64.b64decode(v.value)
        return data, v.type
    return v, None


def _product(p: str | ProductModel) -> ProductSpec:
    pm = ProductModel(name=p) if isinstance(p, str) else p
    return ProductSpec(pm.name, pm.version, pm.publisher, pm.code, pm.view, pm.install_date)


def _patch(p: PatchModel) -> PatchSpec:
    return PatchSpec(p.product, p.code, p.name, p.state, p.installed)


def _changes(sets: SetsModel, ctx: _Ctx, loc: tuple[Any, ...]) -> Changes:
    return Changes(
        files=tuple(_file_entry(p, fm, ctx, (*loc, "files", p)) for p, fm in sets.files.items()),
        values=tuple(
            (norm_key(k), n, *_reg_value(v)) for k, vals in sets.registry.items() for n, v in vals.items()
        ),
        products=tuple(_product(p) for p in sets.products),
        remove_products=tuple(sets.remove_products),
        patches=tuple(_patch(p) for p in sets.patches),
        services=tuple(
            (n, s, None) if isinstance(s, str) else (n, s.status, s.start_mode) for n, s in sets.services.items()
        ),
    )


@dataclass(frozen=True)
class HostTemplate:
    """A validated host fixture: the initial state (copied per host) and the fixed behaviour."""

    name: str
    site: str | None
    accounts: Mapping[str, str]
    state: HostState
    installers: tuple[InstallerBehaviour, ...]
    faults: Faults
    max_envelope_kb: int
    max_shells_per_user: int
    idle_timeout_s: float
    time_scale: float
    cbt_hardening_level: str = "Relaxed"
    source: str = ""
    boot: BootSpec = field(default_factory=BootSpec)


def _build_template(hm: HostModel, ctx: _Ctx, loc: tuple[Any, ...]) -> HostTemplate:
    os_info = OsInfo(hm.os.version, hm.os.arch, hm.os.culture)
    ctx = _Ctx(ctx.source, ctx.base_dir, ctx.marks, os_info.ansi_codepage)
    account = next(iter(hm.accounts), "kbfix").replace("/", "\\")
    user = account.split("\\")[-1].split("@")[0]
    domain = account.split("\\")[0] if "\\" in account else (account.split("@", 1)[1] if "@" in account else "")
    if domain == "." or domain.upper() == hm.name.upper():
        domain = ""  # `.\user` and `HOST\user` are local accounts (issue 17: remote UAC, KB951016)
    state = HostState(computer_name=hm.name.upper(), os=os_info, user=user, user_domain=domain)
    for key, vals in hm.registry.items():
        state.ensure_key(key)
        for name, v in vals.items():
            data, type_ = _reg_value(v)
            state.set_value(key, name, data, type_)
    for path, fm in hm.files.items():
        state.put_file(_file_entry(path, fm, ctx, (*loc, "files", path)))
    for name, s in hm.services.items():
        if isinstance(s, str):
            state.set_service(name, s)
        else:
            state.set_service(name, s.status, s.start_mode)
    for p in hm.products:
        pm = _product(p)
        state.add_product(pm.name, pm.version, pm.publisher, pm.code, pm.view, pm.install_date)
    for pa in hm.patches:
        state.add_patch(_patch(pa))
    state.wsus_updates = [
        WsusUpdate(u.id, u.title, u.declined, [{"group": a.group, "action": a.action} for a in u.approvals],
                   u.requires_license)
        for u in hm.wsus_updates
    ]
    state.wsus_replica = hm.wsus_replica
    for g in hm.wsus_groups:
        if g.lower() not in (x.lower() for x in state.wsus_groups):
            state.wsus_groups.append(g)
    wsus_installed = state.get_key(r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup") is not None
    state.wsus_api = hm.wsus_api if hm.wsus_api is not None else (wsus_installed or bool(hm.wsus_updates))
    installers = tuple(
        InstallerBehaviour(i.match, i.exit_code, i.seconds, _changes(i.sets, ctx, (*loc, "installers", n, "sets")), i.log,
                           _changes(i.at_boot, ctx, (*loc, "installers", n, "at_boot")) if i.at_boot is not None else None)
        for n, i in enumerate(hm.installers)
    )
    return HostTemplate(
        name=hm.name,
        site=hm.site,
        accounts=dict(hm.accounts),
        state=state,
        installers=installers,
        faults=Faults(**hm.faults.model_dump()),  # type: ignore[attr-defined]  # FaultsModel is built by create_model
        max_envelope_kb=hm.wsman.max_envelope_kb,
        max_shells_per_user=hm.wsman.max_shells_per_user,
        idle_timeout_s=hm.wsman.idle_timeout_s,
        time_scale=hm.time_scale,
        cbt_hardening_level=hm.wsman.cbt_hardening_level,
        source=ctx.source,
        boot=BootSpec(hm.boot.last_boot if hm.boot.last_boot.tzinfo else hm.boot.last_boot.replace(tzinfo=timezone.utc),
                      hm.boot.reboot_seconds, hm.boot.shutdown_seconds, hm.boot.comes_back,
                      hm.boot.delayed_start_seconds),
    )


def load_templates_text(text: str, name: str = "<string>", base_dir: Path | None = None) -> list[HostTemplate]:
    """Parse and validate fixture text. Raises FixtureError naming `name`, the line and the field."""
    data, marks = parse_yaml(text, name)
    try:
        model = FixtureFileModel.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        loc = tuple(errors[0]["loc"])
        # pydantic adds the union member tried (`str`, `int`, …) after the field: cut the path
        # back to what the file spells and list what each allowed form said.
        n = max((k for k in range(len(loc) + 1) if loc[:k] in marks), default=0)
        message = errors[0]["msg"]
        if n < len(loc):
            same = [e for e in errors if tuple(e["loc"])[:n] == loc[:n] and len(e["loc"]) > n]
            message = "none of the allowed forms fits: " + "; ".join(
                dict.fromkeys(f"{dotted(tuple(e['loc'])[n:])}: {e['msg']}" for e in same)
            )
        raise FixtureError(name, line_for(loc, marks), dotted(loc[:n]), message) from exc
    seen: dict[str, int] = {}
    out = []
    for i, hm in enumerate(model.hosts):
        if hm.name.lower() in seen:
            raise FixtureError(name, line_for(("hosts", i, "name"), marks), f"hosts[{i}].name", f"duplicate host name {hm.name!r}")
        seen[hm.name.lower()] = i
        out.append(_build_template(hm, _Ctx(name, base_dir, marks, "cp1252"), ("hosts", i)))
    return out
