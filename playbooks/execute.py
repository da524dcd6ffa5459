"""Execute and verify: run planned actions through a remoting session, journaled, then re-check.

apply: for each planned action in order, `journal.intent` (committed before anything is
sent), the agent ops, then `journal.result`. Uploads go in `UPLOAD_CHUNK_BYTES` chunks, each
verified by the size the agent reports; `installer.run` carries the SHA-256 so the agent runs
nothing else. A lost answer (`OutcomeUnknownError`) is never re-sent: the action is `unknown`,
the host stops, and verify re-gathers to learn the state. Only the op names an action's kind
allows (`ActionKind.allowed_ops`) are ever sent.
verify: re-gather (one read-only request), re-assess, and merge with what was executed
(`merge_verification`, pure): remediated / pending_reboot / mitigated / failed / unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from playbooks.assess import HostContext, assess, gather_ops
from playbooks.model import (
    ActionKind,
    Evidence,
    ExecutedAction,
    Finding,
    HostResult,
    InstallerRunOp,
    LogLine,
    Outcome,
    PlannedAction,
    SkipReason,
    Status,
    UploadOp,
    WsusApproveOp,
    WsusDeclineOp,
    WsusWorkaroundOp,
    utc_now,
)
from playbooks.packages import PackageCatalog
from playbooks.planner import UPLOAD_CHUNK_BYTES
from playbooks.reboot_facts import REBOOT_ACTION_ID
from playbooks.spec import Playbook
from remoting.agent_protocol import OpRequest, OpResult, op
from remoting.errors import OutcomeUnknownError, RemotingError


class Journal(Protocol):
    """The audit store's side of apply (implemented in kbfix): intent is committed before the op
    is sent, result after the answer (or the loss of it)."""

    def intent(self, host: str, action: PlannedAction) -> None:
        """Record, durably, that `action` is about to be sent to `host`."""
        ...

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        """Record what happened to `action` on `host` (outcome, exit code, times)."""
        ...


class Session(Protocol):
    """What apply/verify need of `remoting.session.AgentSession`."""

    def run(self, ops: Sequence[OpRequest]) -> object:
        """Send one agent request; returns the AgentResponse (raises remoting errors)."""
        ...


class ActionFailed(Exception):
    """An action's op answered not ok or out of shape; message says which and why."""


def _one(session: Session, request: OpRequest) -> OpResult:
    resp = session.run([request])
    result = next((r for r in getattr(resp, "results", ()) if r.id == request.id), None)
    if result is None:
        raise ActionFailed(f"{request.name}: no answer for op {request.id}")
    if not result.ok:
        e = result.error
        raise ActionFailed(f"{request.name} failed: {e.kind if e else 'error'} {e.message if e else ''}".strip())
    return result


def _install(session: Session, action: PlannedAction, packages: PackageCatalog | None, started: datetime) -> ExecutedAction:
    ref = action.package
    pkg = next((p for p in (packages.packages if packages else ()) if ref and p.sha256 == ref.sha256), None)
    if pkg is None:
        raise ActionFailed(f"package {ref.file if ref else '?'} (sha256 {ref.sha256 if ref else '?'}) is not in the packages catalog")
    run = next((o for o in action.ops if isinstance(o, InstallerRunOp)), None)
    if run is None or run.sha256.lower() != pkg.sha256.lower():
        raise ActionFailed(f"{action.id}: no installer.run for package {pkg.file} (sha256 {pkg.sha256})")
    upload = next((o for o in action.ops if isinstance(o, UploadOp)), None)
    if upload is not None:
        offset = 0
        with pkg.path.open("rb") as fh:
            while True:
                chunk = fh.read(UPLOAD_CHUNK_BYTES)
                if not chunk and offset:
                    break
                r = _one(session, op(f"up{offset}", "file.upload", path=upload.path, data=chunk, offset=offset))
                offset += len(chunk)
                if (r.data or {}).get("size") != offset:
                    raise ActionFailed(f"upload of {pkg.file}: host reports {(r.data or {}).get('size')} bytes, expected {offset}")
                if not chunk:
                    break
    r = _one(session, op("install", "installer.run", path=run.path, sha256=run.sha256, arg=list(run.arg),
                         success_codes=[str(c) for c in run.success_codes], reboot_codes=[str(c) for c in run.reboot_codes],
                         log_path=run.log_path, timeout=run.timeout))
    d = r.data or {}
    outcome = Outcome.of(d.get("outcome"))
    return ExecutedAction(action_id=action.id, outcome=outcome, exit_code=d.get("exit_code"),
                          started=started, ended=utc_now(), detail=f"{pkg.file} exit code {d.get('exit_code')}",
                          log_tail=(d.get("log_tail") or "")[-65536:] or None)


def _wsus(session: Session, action: PlannedAction, started: datetime) -> ExecutedAction:
    details = []
    for i, o in enumerate(action.ops):
        if isinstance(o, WsusDeclineOp):
            r = _one(session, op(f"w{i}", o.name, id=o.id))
        elif isinstance(o, WsusApproveOp):
            r = _one(session, op(f"w{i}", o.name, id=o.id, action=o.action, group=o.group))
        elif isinstance(o, WsusWorkaroundOp):
            r = _one(session, op(f"w{i}", o.name, id=list(o.id), group=o.group))
        else:  # unreachable: execute() checked the op names against the kind
            raise ActionFailed(f"{action.id}: op {o.name} is not a WSUS op")
        details.append(f"{o.name} {o.id}: {r.data}")
    return ExecutedAction(action_id=action.id, outcome=Outcome.SUCCESS, started=started, ended=utc_now(),
                          detail="; ".join(details))


def execute(session: Session, action: PlannedAction, packages: PackageCatalog | None) -> ExecutedAction:
    """Run one planned action. Raises OutcomeUnknownError (answer lost) and other RemotingError;
    an op answered not ok, or an op name the action's kind does not allow (nothing is sent
    then), comes back as outcome `failed` with the reason."""
    started = utc_now()
    try:
        kind = ActionKind(action.kind)
        bad = [o.name for o in action.ops if o.name not in kind.allowed_ops]
        if bad:
            raise ActionFailed(f"{action.id}: op(s) {', '.join(bad)} not allowed for a {kind.value} action; nothing sent")
        if kind is ActionKind.INSTALL_PACKAGE:
            return _install(session, action, packages, started)
        return _wsus(session, action, started)
    except (ActionFailed, OSError, ValueError) as exc:
        return ExecutedAction(action_id=action.id, outcome=Outcome.FAILED, started=started, ended=utc_now(), detail=str(exc))


def apply(
    session: Session,
    playbooks: Sequence[Playbook],
    ctx: HostContext,
    assessment: HostResult,
    packages: PackageCatalog | None,
    journal: Journal,
    *,
    should_stop: Callable[[], SkipReason | None] = lambda: None,
) -> list[Finding]:
    """Execute every planned action of `assessment` in order, journaled; returns the findings
    with `executed` filled. Statuses: `failed` when an action failed (later actions of that
    finding are not started), `unknown` when an answer was lost (the host stops), otherwise
    unchanged until verify. `should_stop()` is checked before each action and returns why to stop
    (window, interrupted) or None; a finding whose actions were not started gets that
    `skip_reason` (`halted` after a failed or lost action). `session` must be a non-check-mode
    AgentSession."""
    out: list[Finding] = []
    halted: SkipReason | None = None
    for f in assessment.findings:
        f = f.model_copy(deep=True)
        for action in f.planned:
            if halted is None:
                halted = should_stop()
            if halted is not None:
                f.skip_reason = f.skip_reason or halted
                break
            journal.intent(ctx.name, action)
            started = utc_now()
            try:
                done = execute(session, action, packages)
            except OutcomeUnknownError as exc:
                done = ExecutedAction(action_id=action.id, outcome=Outcome.UNKNOWN, started=started, ended=utc_now(),
                                      detail=f"answer lost, not re-sent: {exc}")
                halted = SkipReason.HALTED  # re-gather before anything else
            except RemotingError as exc:
                done = ExecutedAction(action_id=action.id, outcome=Outcome.FAILED, started=started, ended=utc_now(),
                                      detail=str(exc))
                halted = SkipReason.HALTED
            journal.result(ctx.name, action, done)
            f.executed.append(done)
            if done.outcome is Outcome.UNKNOWN:
                f.status, f.reason = Status.UNKNOWN, f"outcome of '{action.description}' unknown: {done.detail}"
                break
            if done.outcome is Outcome.FAILED:
                f.status, f.reason = Status.FAILED, f"'{action.description}' failed: {done.detail}"
                break
        out.append(f)
    return out


def _followup(pb: Playbook, after: HostResult, since: datetime) -> Evidence | None:
    fu = pb.verify.followup
    if fu is None:
        return None
    fact = after.facts.get(fu.fact, {})
    lines = [LogLine.model_validate(ln) for s in fu.signatures for ln in fact.get("lines", {}).get(s, [])]
    fresh = [ln for ln in lines if ln.timestamp and ln.timestamp >= since]
    return Evidence(probe=f"log.scan {fu.fact}", value=f"{len(fresh)} success line(s) after {since.isoformat()}",
                    lines=fresh, rule=f"{pb.id}:verify.followup", note=fu.found if fresh else fu.missing)


def merge_verification(playbooks: Sequence[Playbook], before: Sequence[Finding], after: HostResult) -> list[Finding]:
    """Pure: combine what apply executed (`before`) with the re-assessed state (`after`).

    - fixed now (`compliant`): `remediated`, or `pending_reboot` when an installer asked for one;
    - still non_compliant after an installer `success`: `failed` with the playbook's wording
      (KB954960: the first package release did not elevate on Server 2008; 1 Aug 2008 re-release);
    - still non_compliant after `reboot_required`: `pending_reboot`;
    - fixed but Windows reports a restart pending (playbooks.reboot_facts): `pending_reboot`;
    - a successful `reboot` action (playbooks.reboot) turns earlier `reboot_required` outcomes
      into `success` (the restart happened and verify re-read the host after it);
    - all workaround steps succeeded: `mitigated`;
    - an `unknown` outcome stays `unknown` unless the host is now fixed;
    - nothing executed: the re-assessed status (a failed/skipped finding keeps its own)."""
    books = {pb.id: pb for pb in playbooks}
    out = []
    for b in before:
        n = after.finding(b.advisory)
        if n is None:
            out.append(b)
            continue
        # reboot (issue 21): a verified restart (action `reboot`, playbooks.reboot) settles the
        # installers' reboot_required; the restart itself is not a remedy outcome.
        rebooted = any(e.action_id == REBOOT_ACTION_ID and e.outcome is Outcome.SUCCESS for e in b.executed)
        outcomes = [Outcome.SUCCESS if rebooted and e.outcome is Outcome.REBOOT_REQUIRED else e.outcome
                    for e in b.executed if e.action_id != REBOOT_ACTION_ID]
        kinds = {ActionKind(p.kind) for p in b.planned}
        status, reason = n.status, n.reason
        notes = list(b.notes)
        if outcomes:
            if n.status in (Status.COMPLIANT, Status.REMEDIATED):
                status = Status.PENDING_REBOOT if Outcome.REBOOT_REQUIRED in outcomes else Status.REMEDIATED
                reason = f"verified after the remedy: {n.reason}"
            elif n.status == Status.MITIGATED:
                status = Status.MITIGATED
            elif n.status == Status.PENDING_REBOOT:  # fixed, and Windows reports a restart pending
                reason = f"verified after the remedy: {n.reason}"
            elif Outcome.UNKNOWN in outcomes:
                status, reason = Status.UNKNOWN, f"{b.reason}; re-read state: {n.reason}"
            elif Outcome.FAILED in outcomes:
                status, reason = Status.FAILED, b.reason
            elif Outcome.REBOOT_REQUIRED in outcomes:
                status, reason = Status.PENDING_REBOOT, f"the installer asked for a reboot; verify again after it. Now: {n.reason}"
            elif kinds <= {ActionKind.WSUS_DECLINE, ActionKind.WSUS_APPROVE, ActionKind.WSUS_WORKAROUND}:
                status = Status.MITIGATED
                reason = "workaround steps completed (" + ", ".join(p.description for p in b.planned) + f"). {n.reason}"
            else:
                pb = books.get(b.advisory)
                status = Status.FAILED
                reason = (pb.verify.unfixed_after_success if pb else "installer succeeded but the host still matches") + f" Now: {n.reason}"
        elif b.status in (Status.FAILED, Status.UNKNOWN, Status.SKIPPED) and n.status == Status.NON_COMPLIANT:
            status, reason = b.status, b.reason
        verification = list(n.evidence)
        pb = books.get(b.advisory)
        if pb and outcomes and status in (Status.REMEDIATED, Status.PENDING_REBOOT):
            fu = _followup(pb, after, min(e.started for e in b.executed))
            if fu is not None:
                verification.append(fu)
                notes.append(fu.note or "")
        out.append(b.model_copy(update={"status": status, "reason": " ".join(reason.split()), "verification": verification,
                                        "notes": notes, "variant": b.variant or n.variant}))
    return out


def verify(session: Session, playbooks: Sequence[Playbook], ctx: HostContext, before: list[Finding]) -> list[Finding]:
    """Re-gather (one read-only agent request), re-assess, and merge with `before` (see
    merge_verification). Raises remoting errors from the gather."""
    resp = session.run(gather_ops(playbooks, ctx))
    return merge_verification(playbooks, before, assess(playbooks, ctx, resp))  # type: ignore[arg-type]
