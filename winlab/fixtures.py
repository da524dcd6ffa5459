"""Host fixtures: YAML files describing emulated hosts, validated and turned into `EmulatedHost`s.

The schema is documented in `winlab/README.md` (keys of issue 3, extended). Validation uses
pydantic; every error is a `FixtureError` naming the file, the line (from the YAML node marks)
and the field. Log contents are stored as bytes in the host's encoding (`text:`/`source:` with
`encoding:`), or generated lazily on disk (`generate:`) for scale tests.

Public API: `load_fixtures(path)`, `load_host_fixture_text(text, name)`, `demo_site()`,
`clone_site(hosts, n)`, `FixtureError`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from winlab.faults import Faults
from winlab.fixture_schema import (
    Encoding,
    FileModel,
    FixtureFileModel,
    HostModel,
    ProductModel,
    RegTypedModel,
    SetsModel,
)
from winlab.generated_logs import GeneratedContent
from winlab.hoststate import (
    DEFAULT_MTIME,
    UNINSTALL_KEY,
    BytesContent,
    Content,
    FileEntry,
    HostState,
    OsInfo,
    RegData,
    RegType,
    WsusUpdate,
    norm_key,
    norm_path,
)

if TYPE_CHECKING:
    from winlab.host import EmulatedHost

FIXTURES_DIR = Path(__file__).with_name("fixtures")
DEMO_SITE = FIXTURES_DIR / "demo-site.yaml"


class FixtureError(ValueError):
    """A fixture that cannot be loaded. `source` is the file name, `line` 1-based or None,
    `field` the dotted path of the offending key."""

    def __init__(self, source: str, line: int | None, field_path: str, message: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field_path or '<document>'}: {message}")
        self.source = source
        self.line = line
        self.field = field_path
        self.message = message


# --- YAML with line marks --------------------------------------------------------------------


def _marks(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            out[(*path, key)] = k.start_mark.line + 1
            _marks(v, (*path, key), out)
            out[(*path, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _marks(v, (*path, i), out)


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FixtureError(source, mark.line + 1 if mark else None, "", f"YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise FixtureError(source, None, "", f"YAML: {exc}") from exc
    marks: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _marks(node, (), marks)
    return data, marks


def _line_for(loc: tuple[Any, ...], marks: Mapping[tuple[Any, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in marks:
            return marks[tuple(loc[:n])]
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


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
        return FixtureError(self.source, _line_for(loc, self.marks), _dotted(loc), message)


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


@dataclass(frozen=True)
class Changes:
    """A prepared state change (an installer's `sets:`): file entries, registry values, products."""

    files: tuple[FileEntry, ...] = ()
    values: tuple[tuple[str, str, RegData, RegType | None], ...] = ()
    products: tuple[ProductModel, ...] = ()
    remove_products: tuple[str, ...] = ()
    services: tuple[tuple[str, str, str | None], ...] = ()

    def apply(self, state: HostState) -> list[str]:
        """Apply to `state` (paths and keys are env-expanded first). Returns short descriptions."""
        done: list[str] = []
        now = datetime.now(timezone.utc)
        with state.lock:
            for fe in self.files:
                path = state.expand(fe.path)
                state.put_file(FileEntry(path, fe.content, fe.version, fe.version_string, fe.product_version, now))
                done.append(f"file {path}" + (f" version {fe.version}" if fe.version else ""))
            for key, name, data, type_ in self.values:
                state.set_value(state.expand(key), name, data, type_)
                done.append(f"registry {key}\\{name}")
            for pattern in self.remove_products:
                _remove_products(state, pattern)
                done.append(f"removed products {pattern}")
            for p in self.products:
                state.add_product(p.name, p.version, p.publisher, p.code, p.view, p.install_date)
                done.append(f"product {p.name}")
            for name, status, mode in self.services:
                state.set_service(name, status, mode)
                done.append(f"service {name} {status}")
        return done


def _remove_products(state: HostState, pattern: str) -> None:
    for view in ("64", "32"):
        base = state.physical_key(UNINSTALL_KEY, view)  # type: ignore[arg-type]
        for sub in state.subkeys(base):
            key = state.get_key(base + "\\" + sub)
            dn = key.values.get("displayname") if key else None
            if dn and isinstance(dn.data, str) and fnmatch.fnmatchcase(dn.data.lower(), pattern.lower()):
                state.delete_key(base + "\\" + sub)


def _product(p: str | ProductModel) -> ProductModel:
    return ProductModel(name=p) if isinstance(p, str) else p


def _changes(sets: SetsModel, ctx: _Ctx, loc: tuple[Any, ...]) -> Changes:
    return Changes(
        files=tuple(_file_entry(p, fm, ctx, (*loc, "files", p)) for p, fm in sets.files.items()),
        values=tuple(
            (norm_key(k), n, *_reg_value(v)) for k, vals in sets.registry.items() for n, v in vals.items()
        ),
        products=tuple(_product(p) for p in sets.products),
        remove_products=tuple(sets.remove_products),
        services=tuple(
            (n, s, None) if isinstance(s, str) else (n, s.status, s.start_mode) for n, s in sets.services.items()
        ),
    )


@dataclass(frozen=True)
class InstallerBehaviour:
    """One `installers:` entry, prepared: match (wildcard on the file name), exit code, simulated
    seconds, state changes, and the text written to the installer's log_path."""

    match: str
    exit_code: int
    seconds: float
    changes: Changes
    log: str | None

    def matches(self, file_name: str) -> bool:
        """Case-insensitive wildcard match on the package's file name."""
        return fnmatch.fnmatchcase(file_name.lower(), self.match.lower())


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
    source: str = ""


def _build_template(hm: HostModel, ctx: _Ctx, loc: tuple[Any, ...]) -> HostTemplate:
    os_info = OsInfo(hm.os.version, hm.os.arch, hm.os.culture)
    ctx = _Ctx(ctx.source, ctx.base_dir, ctx.marks, os_info.ansi_codepage)
    account = next(iter(hm.accounts), "kbfix").replace("/", "\\")
    user = account.split("\\")[-1].split("@")[0]
    domain = account.split("\\")[0] if "\\" in account else (account.split("@", 1)[1] if "@" in account else "")
    if domain in (".", hm.name) or domain.upper() == hm.name.upper():
        domain = ""  # `.\user` and `HOST\user` are local accounts
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
    state.wsus_updates = [
        WsusUpdate(u.id, u.title, u.declined, [{"group": a.group, "action": a.action} for a in u.approvals])
        for u in hm.wsus_updates
    ]
    for g in hm.wsus_groups:
        if g.lower() not in (x.lower() for x in state.wsus_groups):
            state.wsus_groups.append(g)
    wsus_installed = state.get_key(r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup") is not None
    state.wsus_api = hm.wsus_api if hm.wsus_api is not None else (wsus_installed or bool(hm.wsus_updates))
    installers = tuple(
        InstallerBehaviour(i.match, i.exit_code, i.seconds, _changes(i.sets, ctx, (*loc, "installers", n, "sets")), i.log)
        for n, i in enumerate(hm.installers)
    )
    return HostTemplate(
        name=hm.name,
        site=hm.site,
        accounts=dict(hm.accounts),
        state=state,
        installers=installers,
        faults=Faults(**hm.faults.model_dump()),
        max_envelope_kb=hm.wsman.max_envelope_kb,
        max_shells_per_user=hm.wsman.max_shells_per_user,
        idle_timeout_s=hm.wsman.idle_timeout_s,
        time_scale=hm.time_scale,
        source=ctx.source,
    )


def load_templates_text(text: str, name: str = "<string>", base_dir: Path | None = None) -> list[HostTemplate]:
    """Parse and validate fixture text. Raises FixtureError naming `name`, the line and the field."""
    data, marks = _parse_yaml(text, name)
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
                dict.fromkeys(f"{_dotted(tuple(e['loc'])[n:])}: {e['msg']}" for e in same)
            )
        raise FixtureError(name, _line_for(loc, marks), _dotted(loc[:n]), message) from exc
    seen: dict[str, int] = {}
    out = []
    for i, hm in enumerate(model.hosts):
        if hm.name.lower() in seen:
            raise FixtureError(name, _line_for(("hosts", i, "name"), marks), f"hosts[{i}].name", f"duplicate host name {hm.name!r}")
        seen[hm.name.lower()] = i
        out.append(_build_template(hm, _Ctx(name, base_dir, marks, "cp1252"), ("hosts", i)))
    return out


def load_host_fixture_text(text: str, name: str = "<string>", base_dir: Path | None = None) -> list[EmulatedHost]:
    """Hosts from fixture YAML text (tests). Raises FixtureError."""
    from winlab.host import EmulatedHost

    return [EmulatedHost(t) for t in load_templates_text(text, name, base_dir)]


def load_fixtures(path: Path) -> list[EmulatedHost]:
    """Hosts from a fixture file, or from every `*.yaml`/`*.yml` file of a directory (sorted by
    name). Raises FixtureError (also for a missing path or duplicate host names across files)."""
    from winlab.host import EmulatedHost

    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise FixtureError(str(path), None, "", "no *.yaml fixture files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise FixtureError(str(path), None, "", "fixture file or directory not found")
    hosts: list[EmulatedHost] = []
    names: set[str] = set()
    for f in files:
        for t in load_templates_text(f.read_text(encoding="utf-8"), str(f), f.parent):
            if t.name.lower() in names:
                raise FixtureError(str(f), None, "hosts", f"host {t.name!r} is defined in more than one file")
            names.add(t.name.lower())
            hosts.append(EmulatedHost(t))
    return hosts


def demo_site() -> list[EmulatedHost]:
    """The shipped demo site (`winlab/fixtures/demo-site.yaml`), fresh state each call."""
    return load_fixtures(DEMO_SITE)


def clone_site(hosts: list[EmulatedHost], n: int) -> list[EmulatedHost]:
    """`n` hosts cycling through `hosts`' templates, named `<NAME>-0001`, `<NAME>-0002`, … (the
    number is the clone's index in the result, 1-based). File contents are shared, state is not.
    Raises ValueError when `hosts` is empty and n > 0."""
    from winlab.host import EmulatedHost

    if n > 0 and not hosts:
        raise ValueError("clone_site needs at least one host")
    width = max(4, len(str(n)))
    return [
        EmulatedHost(hosts[i % len(hosts)].template, f"{hosts[i % len(hosts)].template.name}-{i + 1:0{width}d}")
        for i in range(n)
    ]
