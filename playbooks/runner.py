"""Apply and verify: run planned actions through a remoting session, journaled, then re-check.

apply: for each planned action in order, `journal.intent` (committed before anything is
sent), the agent ops, then `journal.result`. Uploads go in `UPLOAD_CHUNK_BYTES` chunks, each
verified by the size the agent reports; `installer.run` carries the SHA-256 so the agent runs
nothing else. A lost answer (`OutcomeUnknownError`) is never re-sent: the action is `unknown`,
the host stops, and verify re-gathers to learn the state.
verify: re-gather (one read-only request), re-assess, and merge with what was executed
(`merge_verification`, pure): remediated / pending_reboot / mitigated / failed / unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from playbooks.assess import Assessment, HostContext, assess, gather_ops
from playbooks.model import Evidence, ExecutedAction, Finding, LogLine, PlannedAction, Status, utcnow
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
    run = next(o for o in action.ops if o["name"] == "installer.run")
    upload = next((o for o in action.ops if o["name"] == "file.upload"), None)
    if upload is not None:
        path = upload["args"]["path"]
        offset = 0
        with pkg.path.open("rb") as fh:
            while True:
                chunk = fh.read(UPLOAD_CHUNK_BYTES)
                if not chunk and offset:
                    break
                r = _one(session, op(f"up{offset}", "file.upload", path=path, data=chunk, offset=offset))
                offset += len(chunk)
                if (r.data or {}).get("size") != offset:
                    raise ActionFailed(f"upload of {pkg.file}: host reports {(r.data or {}).get('size')} bytes, expected {offset}")
                if not chunk:
                    break
    a = run["args"]
    r = _one(session, op("install", "installer.run", path=a["path"], sha256=a["sha256"], arg=list(a["arg"]),
                         success_codes=[str(c) for c in a["success_codes"]], reboot_codes=[str(c) for c in a["reboot_codes"]],
                         log_path=a["log_path"], timeout=a["timeout"]))
    d = r.data or {}
    return ExecutedAction(action_id=action.id, outcome=str(d.get("outcome", "failed")), exit_code=d.get("exit_code"),
                          started=started, ended=utcnow(), detail=f"{pkg.file} exit code {d.get('exit_code')}",
                          log_tail=(d.get("log_tail") or "")[-65536:] or None)


def _wsus(session: Session, action: PlannedAction, started: datetime) -> ExecutedAction:
    details = []
    for i, o in enumerate(action.ops):
        r = _one(session, op(f"w{i}", o["name"], **o["args"]))
        details.append(f"{o['name']} {o['args'].get('id')}: {r.data}")
    return ExecutedAction(action_id=action.id, outcome="success", started=started, ended=utcnow(), detail="; ".join(details))


def execute(session: Session, action: PlannedAction, packages: PackageCatalog | None) -> ExecutedAction:
    """Run one planned action. Raises OutcomeUnknownError (answer lost) and other RemotingError;
    an op answered not ok comes back as outcome `failed` with the reason."""
    started = utcnow()
    try:
        if action.kind == "install_package":
            return _install(session, action, packages, started)
        if action.kind in ("wsus_decline", "wsus_approve", "wsus_workaround"):  # windows (issue 13): one-op workaround
            return _wsus(session, action, started)
        raise ActionFailed(f"unknown action kind {action.kind!r}")
    except (ActionFailed, OSError) as exc:
        return ExecutedAction(action_id=action.id, outcome="failed", started=started, ended=utcnow(), detail=str(exc))


def apply(
    session: Session,
    playbooks: Sequence[Playbook],
    ctx: HostContext,
    assessment: Assessment,
    packages: PackageCatalog | None,
    journal: Journal,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Finding]:
    """Execute every planned action of `assessment` in order, journaled; returns the findings
    with `executed` filled. Statuses: `failed` when an action failed (later actions of that
    finding are not started), `unknown` when an answer was lost (the host stops), otherwise
    unchanged until verify. `should_stop()` is checked before each action; actions not started
    get `skip_reason`. `session` must be a non-check-mode AgentSession."""
    out: list[Finding] = []
    halted: str | None = None
    for f in assessment.findings:
        f = f.model_copy(deep=True)
        for action in f.planned:
            if halted is None and should_stop():
                halted = "stopped before this action (window closed or run stopping)"
            if halted is not None:
                f.skip_reason = f.skip_reason or halted
                break
            journal.intent(ctx.name, action)
            started = utcnow()
            try:
                done = execute(session, action, packages)
            except OutcomeUnknownError as exc:
                done = ExecutedAction(action_id=action.id, outcome="unknown", started=started, ended=utcnow(),
                                      detail=f"answer lost, not re-sent: {exc}")
                halted = "an earlier action's outcome is unknown: re-gather before anything else"
            except RemotingError as exc:
                done = ExecutedAction(action_id=action.id, outcome="failed", started=started, ended=utcnow(), detail=str(exc))
                halted = f"host connection failed: {exc.kind}"
            journal.result(ctx.name, action, done)
            f.executed.append(done)
            if done.outcome == "unknown":
                f.status, f.reason = Status.UNKNOWN, f"outcome of '{action.description}' unknown: {done.detail}"
                break
            if done.outcome == "failed":
                f.status, f.reason = Status.FAILED, f"'{action.description}' failed: {done.detail}"
                break
        out.append(f)
    return out


def _followup(pb: Playbook, after: Assessment, since: datetime) -> Evidence | None:
    fu = pb.verify.followup
    if fu is None:
        return None
    fact = after.facts.get(fu.fact, {})
    lines = [LogLine.model_validate(ln) for s in fu.signatures for ln in fact.get("lines", {}).get(s, [])]
    fresh = [ln for ln in lines if ln.timestamp and ln.timestamp >= since]
    return Evidence(probe=f"log.scan {fu.fact}", value=f"{len(fresh)} success line(s) after {since.isoformat()}",
                    lines=fresh, rule=f"{pb.id}:verify.followup", note=fu.found if fresh else fu.missing)


def merge_verification(playbooks: Sequence[Playbook], before: Sequence[Finding], after: Assessment) -> list[Finding]:
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
        rebooted = any(e.action_id == REBOOT_ACTION_ID and e.outcome == "success" for e in b.executed)
        outcomes = ["success" if rebooted and e.outcome == "reboot_required" else e.outcome
                    for e in b.executed if e.action_id != REBOOT_ACTION_ID]
        kinds = {p.kind for p in b.planned}
        status, reason = n.status, n.reason
        notes = list(b.notes)
        if outcomes:
            if n.status in (Status.COMPLIANT, Status.REMEDIATED):
                status = Status.PENDING_REBOOT if "reboot_required" in outcomes else Status.REMEDIATED
                reason = f"verified after the remedy: {n.reason}"
            elif n.status == Status.MITIGATED:
                status = Status.MITIGATED
            elif n.status == Status.PENDING_REBOOT:  # fixed, and Windows reports a restart pending
                reason = f"verified after the remedy: {n.reason}"
            elif "unknown" in outcomes:
                status, reason = Status.UNKNOWN, f"{b.reason}; re-read state: {n.reason}"
            elif "failed" in outcomes:
                status, reason = Status.FAILED, b.reason
            elif "reboot_required" in outcomes:
                status, reason = Status.PENDING_REBOOT, f"the installer asked for a reboot; verify again after it. Now: {n.reason}"
            elif kinds <= {"wsus_decline", "wsus_approve", "wsus_workaround"}:
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
