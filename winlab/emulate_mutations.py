"""The agent's mutating ops, emulated: upload, installer, service restart, WSUS decline/approve.

Each one calls `records.mutated(op, detail)` (no file data, no secrets) once it changes state;
remoting refuses to send them from a check-mode session (remoting/ops.py says which ops mutate).
"""

from __future__ import annotations

import ntpath
import re
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
        return {"path": path, "size": len(body)}  # the argument as expanded, as the agent returns it


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


# msiexec's logging option: /L[i|w|e|a|r|u|c|m|o|p|v|x|+|!|*] <LogFile> (Windows Installer docs,
# "Command-Line Options"); an .exe writes a log only where its own switch names the path.
_MSI_LOG_OPTION = re.compile(r"(?i)^/l[iwearucmopvx+!*]*$")
# msiexec's display options that show no dialog: /quiet, /passive (progress bar only, no
# interaction) and /q, /qn, /qb… (Windows Installer "Command-Line Options"); /qf and /qr are
# full/reduced UI. Without one, msiexec shows its UI on WinRM's invisible desktop and waits.
_MSI_QUIET_OPTION = re.compile(r"(?i)^/(quiet|passive|q|qn[+-]?|qb[+-]?!?)$")


def _waits_for_ui(path: str, args: list[str]) -> bool:
    """True when msiexec would show a dialog nobody can answer (an .msi/.msp without a quiet option)."""
    return path.lower().endswith((".msi", ".msp")) and not any(_MSI_QUIET_OPTION.match(a) for a in args)


def _requested_log(path: str, args: list[str], log_path: str | None) -> str | None:
    """Where the installer's command line asks it to write its log, or None (no log)."""
    if path.lower().endswith((".msi", ".msp")):
        for i, a in enumerate(args[:-1]):
            if _MSI_LOG_OPTION.match(a):
                return args[i + 1]
        return None
    if log_path and any(log_path.lower() in a.lower() for a in args):
        return log_path
    return None


def op_installer_run(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """installer.run: check the package's SHA-256, run it (the fixture's `installers:` entry
    whose `match` fits the file name decides exit code, simulated seconds and state changes),
    map the exit code to an outcome. No matching entry: exit 1603, nothing changes.

    An .msi/.msp without a quiet display option (/quiet, /passive, /q, /qn, /qb) shows its UI on
    the invisible desktop and runs until the timeout. Evidence, as the agent does it: `log_path` is deleted before the start; the installer writes
    a log only where its command line asks (msiexec `/l*v <log>`; an .exe whose own switch names
    `log_path`); `log_tail` is returned only for a log written by this run."""
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
    args = o.texts("arg")
    if log_path:
        ctx.state.delete_file(log_path)
    started = datetime.now(timezone.utc)
    ctx.records.mutated("installer.run", f"{path} args={len(args)}")
    if seconds > timeout or _waits_for_ui(path, args):
        ctx.cancel.wait(timeout * ctx.time_scale)
        raise OpFailure("timeout", f"installer still running after {timeout} s; its process tree was ended (taskkill /T /F)")
    if ctx.cancel.wait(seconds * ctx.time_scale):
        raise OpFailure("exception", "installer interrupted (the agent was stopped)")
    exit_code = behaviour.exit_code if behaviour else NO_BEHAVIOUR_EXIT_CODE
    outcome = "success" if exit_code in success else "reboot_required" if exit_code in reboot else "failed"
    if behaviour and outcome != "failed":
        behaviour.changes.apply(ctx.state)
        if behaviour.at_boot is not None and ctx.power is not None:
            ctx.power.add_at_boot(behaviour.at_boot)  # applied at the next boot (winlab.power)
    written = _requested_log(path, args, log_path)
    if written and re.match(r"^([A-Za-z]:\\|\\\\)", ctx.state.expand(written, ctx.env)):
        text = behaviour.log if behaviour and behaviour.log else f"=== Verbose logging started: {name} (kbfix lab) ===\r\n"
        text += f"\r\nexit code {exit_code}\r\n"
        ctx.state.put_file(FileEntry(ctx.state.expand(written, ctx.env), BytesContent(text.encode("utf-8")),
                                     mtime=datetime.now(timezone.utc)))
    tail = None
    if log_path:
        lf = ctx.state.get_file(log_path)
        if lf is not None and lf.mtime >= started:
            tail = _read_tail(ctx.state, log_path)
    return {"exit_code": exit_code, "outcome": outcome, "seconds": float(seconds), "log_tail": tail}


def op_service_restart(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """service.restart: a known service ends up Running."""
    name = o.text("name") or ""
    if ctx.state.get_service(name) is None:
        raise OpFailure("not_found", f"service {name!r} does not exist", "0x80070424")
    ctx.state.set_service(name, "Running")
    ctx.records.mutated("service.restart", name)
    return {"status": "Running"}


# --- WSUS 3.0 administration API (Microsoft.UpdateServices.Administration), as Microsoft documents it:
# - IUpdate.Decline: "Declining an update removes all approvals for all revisions of the update";
#   it throws InvalidOperationException on a replica server (IUpdateServerConfiguration.
#   IsReplicaServer) — https://learn.microsoft.com/previous-versions/windows/desktop/ms747138(v=vs.85)
# - IUpdate.Approve(UpdateApprovalAction, IComputerTargetGroup): the actions a client can be given
#   are Install, Uninstall and NotApproved (`All` only queries) — UpdateApprovalAction,
#   https://learn.microsoft.com/previous-versions/windows/desktop/ms752788(v=vs.85); an update whose
#   RequiresLicenseAgreementAcceptance is true cannot be approved before its licence is accepted
#   (https://learn.microsoft.com/previous-versions/windows/desktop/bb294969(v=vs.85)); a replica
#   "has the same ... approvals ... and declined status as the upstream server" and refuses changes.
# - An approved (or NotApproved) update is no longer declined: ApprovedStates lists Declined and
#   NotApproved as separate states ("not approved any revision of the update or declined the update").
#   NotApproved for a group removes that group's approval (the update is not available to it).
APPROVAL_ACTIONS = ("Install", "Uninstall", "NotApproved")
# COR_E_INVALIDOPERATION: the HRESULT of System.InvalidOperationException
INVALID_OPERATION_HRESULT = "0x80131509"


def update_json(u: WsusUpdate) -> dict[str, Any]:
    """A WSUS update as the wsus.* ops answer it: id, title, IsDeclined, approvals, and
    RequiresLicenseAgreementAcceptance."""
    return {"id": u.id, "title": u.title, "declined": u.declined, "approvals": [dict(a) for a in u.approvals],
            "requires_license": u.requires_license}


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


def _refuse_on_replica(ctx: AgentContext, what: str) -> None:
    if ctx.state.wsus_replica:
        raise OpFailure("exception", f"InvalidOperationException: cannot {what} on a replica WSUS server "
                        "(IsReplicaServer): approvals and declines come from its upstream server",
                        INVALID_OPERATION_HRESULT)


def decline(ctx: AgentContext, u: WsusUpdate) -> None:
    """IUpdate.Decline: declined, and every approval removed. Raises OpFailure on a replica."""
    _refuse_on_replica(ctx, "decline an update")
    u.declined = True
    u.approvals = []


def approve(ctx: AgentContext, u: WsusUpdate, want_action: str, want_group: str) -> tuple[str, str]:
    """IUpdate.Approve(action, group) → (action, group) as stored. Raises OpFailure: invalid_args
    (not Install/Uninstall/NotApproved), not_found (no such group), exception (replica; licence
    not accepted)."""
    action = next((a for a in APPROVAL_ACTIONS if a.lower() == want_action.lower()), None)
    if action is None:
        raise OpFailure("invalid_args", f"unknown approval action {want_action} (WSUS 3.0 accepts Install, Uninstall, NotApproved)")
    group = next((g for g in ctx.state.wsus_groups if g.lower() == want_group.lower()), None)
    if group is None:
        raise OpFailure("not_found", f"no computer group named {want_group}")
    _refuse_on_replica(ctx, "approve an update")
    if u.requires_license:
        raise OpFailure("exception", f"InvalidOperationException: the licence agreement of '{u.title}' must be accepted "
                        "before it can be approved (RequiresLicenseAgreementAcceptance)", INVALID_OPERATION_HRESULT)
    u.declined = False
    u.approvals = [a for a in u.approvals if a["group"].lower() != group.lower()]
    if action != "NotApproved":
        u.approvals.append({"group": group, "action": action})
    return action, group


def op_wsus_decline(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.decline_update: IUpdate.Decline (declined, approvals cleared)."""
    with ctx.state.lock:
        u = _find_update(ctx, o.text("id") or "")
        decline(ctx, u)
        ctx.records.mutated("wsus.decline_update", u.id)
        return {"id": u.id, "declined": True}


def op_wsus_approve(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.approve_update: IUpdate.Approve for `group` (a group of the host's `wsus_groups`;
    `All Computers` always exists)."""
    want_action = o.text("action", "Install") or "Install"
    want_group = o.text("group", "All Computers") or "All Computers"
    with ctx.state.lock:
        u = _find_update(ctx, o.text("id") or "")
        action, group = approve(ctx, u, want_action, want_group)
        ctx.records.mutated("wsus.approve_update", f"{u.id} {action} {group}")
        return {"id": u.id, "approvals": [dict(a) for a in u.approvals]}


def op_wsus_workaround(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """wsus.workaround: the KB954960 RTM workaround on every update id given, as the console
    procedure does it: decline (when not declined) → approve with NotApproved for `group`
    (the Approve dialog accepted with no changes) → decline, the last decline in a `finally` so
    the update always ends declined. Each step is reported per update
    (`{"updates": [{id, title, steps: [..], declined, approvals}]}`); a failing step fails the
    op with the steps done in its message. Refused before any change on a replica server or
    when a licence agreement is not accepted."""
    group = o.text("group", "All Computers") or "All Computers"
    out = []
    with ctx.state.lock:
        ups = [_find_update(ctx, uid) for uid in o.texts("id")]
        _refuse_on_replica(ctx, "run the workaround")
        for u in ups:
            if u.requires_license:
                raise OpFailure("exception", f"the licence agreement of '{u.title}' is not accepted "
                                "(RequiresLicenseAgreementAcceptance): nothing was changed", INVALID_OPERATION_HRESULT)
        for u in ups:
            steps: list[str] = []
            try:
                if not u.declined:
                    decline(ctx, u)
                    steps.append("decline")
                approve(ctx, u, "NotApproved", group)
                steps.append("approve NotApproved")
            except OpFailure as f:
                f.error = type(f.error)(f.error.kind, f"{f.error.message} (steps done on {u.id}: {', '.join(steps) or 'none'})",
                                        f.error.hresult)
                raise
            finally:
                decline(ctx, u)
                steps.append("decline")
                ctx.records.mutated("wsus.workaround", f"{u.id} {' > '.join(steps)}")
            out.append({**update_json(u), "steps": steps})
    return {"updates": out}
