"""The kbfix agent, emulated: runs a decoded `AgentRequest` op by op against a `HostState`.

This is the lab's side of remoting/PROTOCOL.md (protocol v1); `remoting/agent.ps1` is the
Windows side and must behave the same. Rules the protocol leaves to the implementation are
stated where they are applied and summarised in winlab/README.md. Every op runs in its own
error boundary: a failing op answers its error and the next op still runs.
"""

from __future__ import annotations

import base64
import json
import ntpath
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from remoting.agent_protocol import (
    AgentRequest,
    OpError,
    OpRequest,
    OpResult,
    RequestFormatError,
    response_document,
)
from remoting.ops import OPS, OpSpec
from winlab.emulate_common import AgentContext, OpFailure, int_arg, iso_utc, path_arg
from winlab.emulate_logscan import ScanSpec, scan_content
from winlab.emulate_mutations import (
    op_file_upload,
    op_installer_run,
    op_service_restart,
    op_wsus_approve,
    op_wsus_decline,
    op_wsus_workaround,
    update_json,
)
from winlab.emulate_power import op_reboot, op_reboot_state
from winlab.hoststate import HostState, RegValue, content_sha256, norm_path
from winlab.products import list_patches, list_products

__all__ = ["AgentContext", "OpFailure", "host_info", "list_products", "run_op", "run_request"]


def host_info(state: HostState) -> dict[str, Any]:
    """The response's `host` object."""
    return {
        "computer_name": state.computer_name,
        "os_version": state.os.version,
        "arch": state.os.arch,
        "culture": state.os.culture,
        "ps_version": "2.0",
    }


def run_request(request: AgentRequest, ctx: AgentContext, *, bad: Mapping[int, str] | None = None
                ) -> tuple[dict[str, Any], bool]:
    """Run every op of `request`; returns (response document, whether a mutating op ran).
    `bad` (op position → message, from `winlab.agent_request`) answers those ops `invalid_args`.

    The response is bounded by `request.limit` bytes of JSON: once the next result would pass
    it, that op and every later one answer kind `limit` and `truncated` is true (later ops do
    not run)."""
    started = time.monotonic()
    results: list[OpResult] = []
    used = len(json.dumps(response_document(request.nonce, host_info(ctx.state), [])).encode("utf-8"))
    truncated = False
    mutated = False
    for n, o in enumerate(request.ops):
        if truncated:
            results.append(OpResult(o.id, o.name, False, error=OpError("limit", "response limit reached")))
            continue
        if bad and n in bad:
            res = OpResult(o.id, o.name, False, error=OpError("invalid_args", bad[n]))
        else:
            res = run_op(o, ctx)
        # A known mutating op was attempted (whatever its outcome): fault drop_after_mutation fires.
        spec = op_spec(o.name)
        mutated = mutated or (spec is not None and spec.mutating and not (bad and n in bad))
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


def op_spec(name: str) -> OpSpec | None:
    """The op named `name`, matched as agent.ps1 matches it: its op table is a PowerShell
    hashtable and its dispatch a `switch`, both case-insensitive."""
    return OPS.get(name) or next((s for n, s in OPS.items() if n.lower() == name.lower()), None)


def run_op(o: OpRequest, ctx: AgentContext) -> OpResult:
    """Run one op in its own error boundary (the result echoes the op name as sent)."""
    spec = op_spec(o.name)
    if spec is None:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", f"unknown op {o.name!r}"))
    missing = [k for k in spec.required if not o.args.get(k)]
    if missing:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", f"missing argument(s): {', '.join(missing)}"))
    handler = _HANDLERS[spec.name]
    try:
        data = handler(o, ctx)
    except OpFailure as f:
        return OpResult(o.id, o.name, False, error=f.error)
    except RequestFormatError as exc:
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", str(exc)))
    except Exception as exc:  # an emulator bug must not sink the other ops (the agent's trap does the same)
        return OpResult(o.id, o.name, False, error=OpError("exception", f"{type(exc).__name__}: {exc}"))
    if spec.name == "registry.values":
        ctx.registry_results[o.id] = data
    return OpResult(o.id, o.name, True, data=data)

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
    path = path_arg(o, ctx)
    fe = ctx.state.get_file(path)
    if fe is None:
        return {
            "exists": False, "path": path, "size": None, "mtime": None, "file_version": None,
            "file_version_string": None, "product_version": None, "sha256": None,
        }
    return {
        "exists": True,
        "path": path,  # the argument as expanded, as the agent returns it
        "size": fe.size,
        "mtime": iso_utc(fe.mtime),
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
    """log.scan: bounded regex scan of a log (and rotated siblings); see winlab.emulate_logscan.
    A scan whose resolved path and arguments equal an earlier op's in the same request (TargetDir
    and the %ProgramFiles% fallback are often one file) is not repeated: `{"files": [], "same_as": id}`."""
    path = path_arg(o, ctx)
    key = (norm_path(path).lower(), *(f"{k}={v!r}" for k, v in sorted(o.args.items()) if k != "path"))
    if key in ctx.scans:
        return {"files": [], "same_as": ctx.scans[key]}
    ctx.scans[key] = o.id
    ctx.records.log_scanned(norm_path(path))
    pats = []
    for i, p in enumerate(o.texts("pattern")):
        try:
            pats.append(re.compile(p, re.IGNORECASE))
        except re.error as exc:
            raise OpFailure("invalid_args", f"pattern {i} is not a valid regex: {exc}") from exc
    spec = ScanSpec(
        patterns=tuple(pats),
        max_matches=int_arg(o, "max_matches", 20, 1, 1000),
        context=int_arg(o, "context", 0, 0, 20),
        start_offset=int_arg(o, "start_offset", 0, 0, 1 << 62),
        tail_bytes=int_arg(o, "tail_bytes", 0, 0, 1 << 62),
        max_line_chars=int_arg(o, "max_line_chars", 4096, 16, 1 << 20),
    )
    codec = ctx.state.os.ansi_codepage
    files: list[dict[str, Any]] = []
    if o.flag("rotated"):
        sibs = [fe for fe in (ctx.state.get_file(s) for s in rotated_siblings(path)) if fe is not None]
        for fe in sorted(sibs, key=lambda e: e.mtime):
            files.append({"path": fe.path, "exists": True, **scan_content(fe.data(), spec, codec, is_named=False)})
    named = ctx.state.get_file(path)
    if named is None:
        files.append({
            "path": path, "exists": False, "size": 0, "encoding": None, "start_offset": 0,
            "end_offset": 0, "matches": [], "patterns_full": [],
        })
    else:
        files.append({"path": path, "exists": True, **scan_content(named.data(), spec, codec)})
    for f in files:
        # Fixed key order, as the agent writes it.
        f.update({k: f.pop(k) for k in ("size", "encoding", "start_offset", "end_offset", "matches", "patterns_full")})
    return {"files": files}


def op_products_list(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """products.list: Uninstall entries (both views on x64; the one native view on x86)."""
    return {"products": list_products(ctx.state, o.text("pattern"))}


def op_products_patches(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """products.patches: Windows Installer patch registrations (see winlab.products)."""
    return {"patches": list_patches(ctx.state, o.text("pattern"))}


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


def op_wsus_find_update(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.find_update: every update whose title equals `title` (case-insensitive), declined or
    not — the agent asks `IUpdateServer.GetUpdates(UpdateScope)` with ApprovedStates Any, which
    includes declined updates (MS docs "Displaying Available Updates") — and whether the server
    is a replica (`IUpdateServerConfiguration.IsReplicaServer`)."""
    title = (o.text("title") or "").lower()
    with ctx.state.lock:
        if not ctx.state.wsus_api:
            return {"available": False, "replica": False, "updates": []}
        return {"available": True, "replica": ctx.state.wsus_replica,
                "updates": [update_json(u) for u in ctx.state.wsus_updates if u.title.lower() == title]}

_HANDLERS: dict[str, Callable[[OpRequest, AgentContext], dict[str, Any]]] = {
    "env.expand": op_env_expand,
    "registry.values": op_registry_values,
    "file.info": op_file_info,
    "log.scan": op_log_scan,
    "products.list": op_products_list,
    "products.patches": op_products_patches,
    "service.status": op_service_status,
    "wsus.find_update": op_wsus_find_update,
    "file.upload": op_file_upload,
    "installer.run": op_installer_run,
    "service.restart": op_service_restart,
    "wsus.decline_update": op_wsus_decline,
    "wsus.approve_update": op_wsus_approve,
    "wsus.workaround": op_wsus_workaround,
    "system.reboot_state": op_reboot_state,  # reboot (issue 21)
    "system.reboot": op_reboot,
}
