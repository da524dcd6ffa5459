"""The kbfix agent, emulated: runs a decoded `AgentRequest` op by op against a `HostState`.

This is the lab's side of remoting/PROTOCOL.md (protocol v1); `remoting/agent.ps1` is the
Windows side and must behave the same. Rules the protocol leaves to the implementation are
stated where they are applied and summarised in winlab/README.md. Every op runs in its own
error boundary: a failing op answers its error and the next op still runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ntpath
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from remoting.agent_protocol import (
    AgentRequest,
    OpError,
    OpRequest,
    OpResult,
    RequestFormatError,
    response_document,
)
from remoting.ops import OPS
from winlab.emulate_logscan import ScanSpec, detect_encoding, scan_content
from winlab.fixtures import InstallerBehaviour
from winlab.hoststate import (
    UNINSTALL_KEY,
    BytesContent,
    FileEntry,
    HostState,
    RegValue,
    content_sha256,
    norm_path,
)
from winlab.records import HostRecords

_REF_RE = re.compile(r"\$\{reg:([A-Za-z0-9_.-]{1,64}):([^}]*)\}")
LOG_TAIL_BYTES = 64 * 1024
# Installer exit codes: 3010 ERROR_SUCCESS_REBOOT_REQUIRED, 1641 ERROR_SUCCESS_REBOOT_INITIATED,
# 1603 ERROR_INSTALL_FAILURE (Windows Installer docs, "MsiExec.exe and InstMsi.exe error messages").
DEFAULT_REBOOT_CODES = (3010, 1641)
NO_BEHAVIOUR_EXIT_CODE = 1603


class OpFailure(Exception):
    """Raised inside an op handler: the op answers `error` and the request goes on."""

    def __init__(self, kind: str, message: str, hresult: str | None = None) -> None:
        super().__init__(message)
        self.error = OpError(kind, message, hresult)


@dataclass
class AgentContext:
    """What one agent run sees: host state, its behaviour, shell environment, cancel event,
    the records to write to, and the results so far (for `${reg:…}` references)."""

    state: HostState
    installers: tuple[InstallerBehaviour, ...]
    records: HostRecords
    env: Mapping[str, str] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    time_scale: float = 1.0
    registry_results: dict[str, dict[str, Any]] = field(default_factory=dict)


def host_info(state: HostState) -> dict[str, Any]:
    """The response's `host` object."""
    return {
        "computer_name": state.computer_name,
        "os_version": state.os.version,
        "arch": state.os.arch,
        "culture": state.os.culture,
        "ps_version": "2.0",
    }


def run_request(request: AgentRequest, ctx: AgentContext) -> tuple[dict[str, Any], bool]:
    """Run every op of `request`; returns (response document, whether a mutating op ran).

    The response is bounded by `request.limit` bytes of JSON: once the next result would pass
    it, that op and every later one answer kind `limit` and `truncated` is true (later ops do
    not run)."""
    started = time.monotonic()
    results: list[OpResult] = []
    used = len(json.dumps(response_document(request.nonce, host_info(ctx.state), [])).encode("utf-8"))
    truncated = False
    mutated = False
    for o in request.ops:
        if truncated:
            results.append(OpResult(o.id, o.name, False, error=OpError("limit", "response limit reached")))
            continue
        res = run_op(o, ctx)
        # A known mutating op was attempted (whatever its outcome): fault drop_after_mutation fires.
        mutated = mutated or (o.name in OPS and o.mutating)
        item = response_document(request.nonce, {}, [res])["results"][0]
        size = len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 2
        if used + size > request.limit:
            truncated = True
            results.append(OpResult(o.id, o.name, False, error=OpError("limit", "response limit reached")))
            continue
        used += size
        results.append(res)
    elapsed = int((time.monotonic() - started) * 1000)
    doc = response_document(request.nonce, host_info(ctx.state), results, truncated=truncated, elapsed_ms=elapsed)
    return doc, mutated


def run_op(o: OpRequest, ctx: AgentContext) -> OpResult:
    """Run one op in its own error boundary."""
    spec = OPS.get(o.name)
    if spec is None:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", f"unknown op {o.name!r}"))
    missing = [k for k in spec.required if not o.args.get(k)]
    if missing:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", f"missing argument(s): {', '.join(missing)}"))
    handler = _HANDLERS[o.name]
    try:
        data = handler(o, ctx)
    except OpFailure as f:
        return OpResult(o.id, o.name, False, error=f.error)
    except RequestFormatError as exc:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", str(exc)))
    except Exception as exc:  # an emulator bug must not sink the other ops (the agent's trap does the same)
        return OpResult(o.id, o.name, False, error=OpError("exception", f"{type(exc).__name__}: {exc}"))
    if o.name == "registry.values":
        ctx.registry_results[o.id] = data
    return OpResult(o.id, o.name, True, data=data)


# --- shared helpers ------------------------------------------------------------------------------


def resolve_path(text: str, ctx: AgentContext) -> str:
    """Apply `${reg:ID:NAME}` references (view 64 first, then 32) then environment expansion.
    Raises OpFailure(not_found) for an unresolved reference."""

    def ref(m: re.Match[str]) -> str:
        data = ctx.registry_results.get(m.group(1))
        name = m.group(2).lower()
        for view in ("64", "32"):
            v = (data or {}).get("views", {}).get(view) or {}
            for vname, val in (v.get("values") or {}).items():
                if vname.lower() == name and val["type"] in ("REG_SZ", "REG_EXPAND_SZ"):
                    return str(val["value"])
        raise OpFailure("not_found", f"unresolved reference {m.group(0)}")

    return ctx.state.expand(_REF_RE.sub(ref, text), ctx.env)


def _int_arg(o: OpRequest, key: str, default: int, lo: int, hi: int) -> int:
    v = o.integer(key, default)
    if not lo <= v <= hi:
        raise OpFailure("invalid_args", f"argument {key!r} must be between {lo} and {hi}")
    return v


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path_arg(o: OpRequest, ctx: AgentContext, key: str = "path") -> str:
    raw = o.text(key) or ""
    path = resolve_path(raw, ctx)
    if not re.match(r"^([A-Za-z]:\\|\\\\)", path.replace("/", "\\")):
        raise OpFailure("invalid_args", f"{key} must be an absolute Windows path: {path!r}")
    return norm_path(path)


def _not_found_hresult() -> str:
    return "0x80070002"  # ERROR_FILE_NOT_FOUND as HRESULT


# --- read ops ------------------------------------------------------------------------------------


def op_env_expand(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """env.expand: ExpandEnvironmentVariables on `text`."""
    return {"value": ctx.state.expand(o.text("text") or "", ctx.env)}


def _value_json(v: RegValue) -> dict[str, Any]:
    data: Any = v.data
    if v.type == "REG_BINARY":
        data = base64.b64encode(v.data if isinstance(v.data, bytes) else str(v.data).encode()).decode("ascii")
    return {"type": v.type, "value": data}


def op_registry_values(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """registry.values: values of `key` in the requested views (physical paths, see hoststate)."""
    key = o.text("key") or ""
    if not re.match(r"(?i)^(HKLM|HKEY_LOCAL_MACHINE|HKCU|HKEY_CURRENT_USER|HKCR|HKEY_CLASSES_ROOT|HKU|HKEY_USERS):?(\\|$)", key):
        raise OpFailure("invalid_args", f"key must start with a hive (HKLM\\...): {key!r}")
    view = o.text("view", "both")
    if view not in ("64", "32", "both"):
        raise OpFailure("invalid_args", "view must be 64, 32 or both")
    names = [n.lower() for n in o.texts("name")]
    views = ("64", "32") if view == "both" else (view,)
    out: dict[str, Any] = {}
    with ctx.state.lock:
        for v in views:
            phys = ctx.state.physical_key(key, v)  # type: ignore[arg-type]
            k = ctx.state.get_key(phys)
            entry: dict[str, Any] = {"exists": k is not None, "path": k.path if k else phys, "values": {}, "subkeys": []}
            if k is not None:
                vals = k.values.values()
                entry["values"] = {x.name: _value_json(x) for x in vals if not names or x.name.lower() in names}
                if o.flag("subkeys"):
                    entry["subkeys"] = ctx.state.subkeys(phys)
            out[v] = entry
    return {"views": out}


def op_file_info(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """file.info: existence, size, mtime, version resources and optional SHA-256."""
    path = _path_arg(o, ctx)
    fe = ctx.state.get_file(path)
    if fe is None:
        return {
            "exists": False, "path": path, "size": None, "mtime": None, "file_version": None,
            "file_version_string": None, "product_version": None, "sha256": None,
        }
    return {
        "exists": True,
        "path": fe.path,
        "size": fe.size,
        "mtime": _iso(fe.mtime),
        "file_version": binary_file_version(fe.version),
        "file_version_string": fe.version_string,
        "product_version": fe.product_version,
        "sha256": content_sha256(fe.data()) if o.flag("sha256") else None,
    }


def binary_file_version(version: str | None) -> str | None:
    """The FILEVERSION as the agent prints it from the File*Part fields: four decimal numbers
    without leading zeros (`4.00.6221.1000` → `4.0.6221.1000`); None when not numeric."""
    if not version:
        return None
    parts = re.findall(r"\d+", version.split(" ")[0])[:4]
    if not parts:
        return None
    parts += ["0"] * (4 - len(parts))
    return ".".join(str(int(x) & 0xFFFF) for x in parts)


def rotated_siblings(path: str) -> list[str]:
    """Candidate rotated files of `path`, as SMS/ConfigMgr (`x.lo_`) and WSUS/WUA (`x.old`,
    `x.log.old`, `x.bak`) roll them."""
    stem, ext = ntpath.splitext(path)
    cands = []
    if len(ext) >= 2:
        cands.append(stem + ext[:-1] + "_")
    cands += [stem + ".old", path + ".old", stem + ".bak", path + ".1"]
    return [c for c in dict.fromkeys(cands) if c.lower() != path.lower()]


def op_log_scan(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """log.scan: bounded regex scan of a log (and rotated siblings); see winlab.emulate_logscan."""
    path = _path_arg(o, ctx)
    pats = []
    for i, p in enumerate(o.texts("pattern")):
        try:
            pats.append(re.compile(p, re.IGNORECASE))
        except re.error as exc:
            raise OpFailure("invalid_args", f"pattern {i} is not a valid regex: {exc}") from exc
    spec = ScanSpec(
        patterns=tuple(pats),
        max_matches=_int_arg(o, "max_matches", 20, 1, 1000),
        context=_int_arg(o, "context", 0, 0, 20),
        start_offset=_int_arg(o, "start_offset", 0, 0, 1 << 62),
        tail_bytes=_int_arg(o, "tail_bytes", 0, 0, 1 << 62),
        max_line_chars=_int_arg(o, "max_line_chars", 4096, 16, 1 << 20),
    )
    codec = ctx.state.os.ansi_codepage
    files: list[dict[str, Any]] = []
    if o.flag("rotated"):
        sibs = [fe for fe in (ctx.state.get_file(s) for s in rotated_siblings(path)) if fe is not None]
        for fe in sorted(sibs, key=lambda e: e.mtime):
            files.append({"path": fe.path, "exists": True, **scan_content(fe.data(), spec, codec, is_named=False)})
    fe = ctx.state.get_file(path)
    if fe is None:
        files.append({
            "path": path, "exists": False, "size": 0, "encoding": None, "start_offset": 0,
            "end_offset": 0, "matches": [], "patterns_full": [],
        })
    else:
        files.append({"path": fe.path, "exists": True, **scan_content(fe.data(), spec, codec)})
    for f in files:
        # Fixed key order, as the agent writes it.
        f.update({k: f.pop(k) for k in ("size", "encoding", "start_offset", "end_offset", "matches", "patterns_full")})
    return {"files": files}


def _wild(pattern: str) -> re.Pattern[str]:
    """PowerShell -like wildcard (`*`, `?`) as a case-insensitive regex."""
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$", re.I | re.S)


def list_products(state: HostState, pattern: str | None) -> list[dict[str, Any]]:
    """Uninstall entries of both views whose DisplayName matches `pattern` (none = all)."""
    rx = _wild(pattern) if pattern else None
    out = []
    # An x86 OS has one view; the agent labels it "32" and does not list it twice.
    views = ("64", "32") if state.os.arch == "x64" else ("32",)
    with state.lock:
        for view in views:
            base = state.physical_key(UNINSTALL_KEY, view)  # type: ignore[arg-type]
            for code in state.subkeys(base):
                k = state.get_key(base + "\\" + code)
                if k is None:
                    continue
                vals = {n: v.data for n, v in k.values.items()}
                name = vals.get("displayname")
                if not isinstance(name, str) or (rx and not rx.match(name)):
                    continue
                out.append({
                    "name": name,
                    "version": vals.get("displayversion"),
                    "publisher": vals.get("publisher"),
                    "product_code": code,
                    "view": view,
                    "install_date": vals.get("installdate"),
                })
    return out


def op_products_list(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """products.list: Uninstall entries (both views on x64; the one native view on x86)."""
    return {"products": list_products(ctx.state, o.text("pattern"))}


def op_service_status(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """service.status: status and start mode per service name."""
    out = {}
    for name in o.texts("name"):
        svc = ctx.state.get_service(name)
        out[name] = (
            {"exists": True, "status": svc.status, "start_mode": svc.start_mode}
            if svc
            else {"exists": False, "status": None, "start_mode": None}
        )
    return {"services": out}


def _update_json(u: Any) -> dict[str, Any]:
    return {"id": u.id, "title": u.title, "declined": u.declined, "approvals": [dict(a) for a in u.approvals]}


def op_wsus_find_update(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.find_update: updates whose title equals `title` (case-insensitive)."""
    title = (o.text("title") or "").lower()
    with ctx.state.lock:
        if not ctx.state.wsus_api:
            return {"available": False, "updates": []}
        return {"available": True, "updates": [_update_json(u) for u in ctx.state.wsus_updates if u.title.lower() == title]}


# --- mutating ops --------------------------------------------------------------------------------


def op_file_upload(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """file.upload: offset 0 creates/truncates; any other offset must equal the current size."""
    path = _path_arg(o, ctx)
    data = o.args["data"][0]
    offset = _int_arg(o, "offset", 0, 0, 1 << 62)
    with ctx.state.lock:
        fe = ctx.state.get_file(path)
        if offset == 0:
            body = data
        else:
            cur = fe.size if fe else 0
            if fe is None or offset != cur:
                raise OpFailure("invalid_args", f"offset {offset} does not equal the current size {cur}")
            with fe.data().open() as f:
                body = f.read() + data
        ctx.state.put_file(FileEntry(path, BytesContent(body), mtime=datetime.now(timezone.utc)))
        ctx.records.mutated("file.upload", f"{path} offset={offset} bytes={len(data)}")
        return {"path": ctx.state.get_file(path).path, "size": len(body)}  # type: ignore[union-attr]


def _codes(o: OpRequest, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    vals = o.texts(key)
    if not vals:
        return default
    try:
        return tuple(int(v) for v in vals)
    except ValueError as exc:
        raise OpFailure("invalid_args", f"{key} must be integers") from exc


def _read_tail(state: HostState, path: str) -> str | None:
    fe = state.get_file(path)
    if fe is None:
        return None
    content = fe.data()
    with content.open() as f:
        head = f.read(4)
        enc, bom = detect_encoding(head)
        start = max(bom, content.size - LOG_TAIL_BYTES)
        if enc.startswith("utf-16"):
            start += (start - bom) % 2
        f.seek(start)
        raw = f.read()
    codec = {"utf-16le": "utf-16-le", "utf-16be": "utf-16-be", "utf-8": "utf-8"}.get(enc, state.os.ansi_codepage)
    return raw.decode(codec, "replace")


def op_installer_run(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """installer.run: check the package's SHA-256, run it (the fixture's `installers:` entry
    whose `match` fits the file name decides exit code, simulated seconds and state changes),
    map the exit code to an outcome. No matching entry: exit 1603, nothing changes."""
    path = _path_arg(o, ctx)
    want = (o.text("sha256") or "").strip().lower()
    success = _codes(o, "success_codes", (0,))
    reboot = _codes(o, "reboot_codes", DEFAULT_REBOOT_CODES)
    timeout = _int_arg(o, "timeout", 1800, 1, 86400)
    log_path = _path_arg(o, ctx, "log_path") if o.args.get("log_path") else None
    fe = ctx.state.get_file(path)
    if fe is None:
        raise OpFailure("not_found", f"installer not found: {path}", _not_found_hresult())
    got = content_sha256(fe.data())
    if got != want:
        raise OpFailure("hash_mismatch", f"SHA-256 of {path} is {got}, expected {want or '(none)'}")
    name = ntpath.basename(path)
    behaviour = next((b for b in ctx.installers if b.matches(name)), None)
    seconds = behaviour.seconds if behaviour else 0.0
    ctx.records.mutated("installer.run", f"{path} args={len(o.texts('arg'))}")
    if seconds > timeout:
        ctx.cancel.wait(timeout * ctx.time_scale)
        raise OpFailure("timeout", f"installer did not finish within {timeout} s")
    if ctx.cancel.wait(seconds * ctx.time_scale):
        raise OpFailure("exception", "installer interrupted (the agent was stopped)")
    exit_code = behaviour.exit_code if behaviour else NO_BEHAVIOUR_EXIT_CODE
    outcome = "success" if exit_code in success else "reboot_required" if exit_code in reboot else "failed"
    if behaviour and outcome != "failed":
        behaviour.changes.apply(ctx.state)
    if log_path:
        text = behaviour.log if behaviour and behaviour.log else f"=== Verbose logging started: {name} (kbfix lab) ===\r\n"
        text += f"\r\nexit code {exit_code}\r\n"
        ctx.state.put_file(FileEntry(log_path, BytesContent(text.encode("utf-8")), mtime=datetime.now(timezone.utc)))
    return {
        "exit_code": exit_code,
        "outcome": outcome,
        "seconds": float(seconds),
        "log_tail": _read_tail(ctx.state, log_path) if log_path else None,
    }


def op_service_restart(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """service.restart: a known service ends up Running."""
    name = o.text("name") or ""
    if ctx.state.get_service(name) is None:
        raise OpFailure("not_found", f"service {name!r} does not exist", "0x80070424")
    ctx.state.set_service(name, "Running")
    ctx.records.mutated("service.restart", name)
    return {"status": "Running"}


def _find_update(ctx: AgentContext, uid: str) -> Any:
    if not ctx.state.wsus_api:
        raise OpFailure("not_found", "the WSUS administration API (Microsoft.UpdateServices.Administration) is not installed")
    try:
        uuid.UUID(uid)
    except ValueError as exc:
        raise OpFailure("invalid_args", "argument 'id' is not a GUID") from exc
    for u in ctx.state.wsus_updates:
        if u.id.lower() == uid.lower():
            return u
    raise OpFailure("not_found", f"update {uid} not found")


def op_wsus_decline(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.decline_update: mark the update declined."""
    with ctx.state.lock:
        u = _find_update(ctx, o.text("id") or "")
        u.declined = True
        ctx.records.mutated("wsus.decline_update", u.id)
        return {"id": u.id, "declined": True}


# Microsoft.UpdateServices.Administration.UpdateApprovalAction members (WSUS 3.0 API reference).
APPROVAL_ACTIONS = ("Install", "Uninstall", "NotApproved", "All")


def op_wsus_approve(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.approve_update: add (or replace) the approval for `group` (a group of the host's
    `wsus_groups`; `All Computers` always exists)."""
    want_action = o.text("action", "Install") or "Install"
    want_group = o.text("group", "All Computers") or "All Computers"
    with ctx.state.lock:
        u = _find_update(ctx, o.text("id") or "")
        action = next((a for a in APPROVAL_ACTIONS if a.lower() == want_action.lower()), None)
        if action is None:
            raise OpFailure("invalid_args", f"unknown approval action {want_action}")
        group = next((g for g in ctx.state.wsus_groups if g.lower() == want_group.lower()), None)
        if group is None:
            raise OpFailure("not_found", f"no computer group named {want_group}")
        u.approvals = [a for a in u.approvals if a["group"].lower() != group.lower()]
        u.approvals.append({"group": group, "action": action})
        ctx.records.mutated("wsus.approve_update", f"{u.id} {action} {group}")
        return {"id": u.id, "approvals": [dict(a) for a in u.approvals]}


_HANDLERS: dict[str, Callable[[OpRequest, AgentContext], dict[str, Any]]] = {
    "env.expand": op_env_expand,
    "registry.values": op_registry_values,
    "file.info": op_file_info,
    "log.scan": op_log_scan,
    "products.list": op_products_list,
    "service.status": op_service_status,
    "wsus.find_update": op_wsus_find_update,
    "file.upload": op_file_upload,
    "installer.run": op_installer_run,
    "service.restart": op_service_restart,
    "wsus.decline_update": op_wsus_decline,
    "wsus.approve_update": op_wsus_approve,
}


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 (helper for tests and fixtures)."""
    return hashlib.sha256(data).hexdigest()
