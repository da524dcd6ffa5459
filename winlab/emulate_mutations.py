"""The agent's mutating ops, emulated: upload, installer, service restart, WSUS decline/approve.

Each one calls `records.mutated(op, detail)` (no file data, no secrets) once it changes state;
remoting refuses to send them from a check-mode session (remoting/ops.py says which ops mutate).
"""

from __future__ import annotations

import ntpath
import uuid
from datetime import datetime, timezone
from typing import Any

from remoting.agent_protocol import OpRequest
from winlab.emulate_common import AgentContext, OpFailure, int_arg, not_found_hresult, path_arg
from winlab.emulate_logscan import detect_encoding
from winlab.hoststate import BytesContent, FileEntry, HostState, WsusUpdate, content_sha256

LOG_TAIL_BYTES = 64 * 1024
# Installer exit codes: 3010 ERROR_SUCCESS_REBOOT_REQUIRED, 1641 ERROR_SUCCESS_REBOOT_INITIATED,
# 1603 ERROR_INSTALL_FAILURE (Windows Installer docs, "MsiExec.exe and InstMsi.exe error messages").
DEFAULT_REBOOT_CODES = (3010, 1641)
NO_BEHAVIOUR_EXIT_CODE = 1603


def op_file_upload(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """file.upload: offset 0 creates/truncates; any other offset must equal the current size."""
    path = path_arg(o, ctx)
    data = o.args["data"][0]
    offset = int_arg(o, "offset", 0, 0, 1 << 62)
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
    path = path_arg(o, ctx)
    want = (o.text("sha256") or "").strip().lower()
    success = _codes(o, "success_codes", (0,))
    reboot = _codes(o, "reboot_codes", DEFAULT_REBOOT_CODES)
    timeout = int_arg(o, "timeout", 1800, 1, 86400)
    log_path = path_arg(o, ctx, "log_path") if o.args.get("log_path") else None
    fe = ctx.state.get_file(path)
    if fe is None:
        raise OpFailure("not_found", f"installer not found: {path}", not_found_hresult())
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


def update_json(u: WsusUpdate) -> dict[str, Any]:
    """A WSUS update as the wsus.* ops answer it."""
    return {"id": u.id, "title": u.title, "declined": u.declined, "approvals": [dict(a) for a in u.approvals]}


def _find_update(ctx: AgentContext, uid: str) -> WsusUpdate:
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
