"""`run_apply`: apply a reviewed plan (or finish an interrupted apply) and verify each host.

Per host: take the host lock, open one session, re-gather (every host in scope: its status
comes from these fresh facts, never from the plan), ask the work source for the host's planned
work (re-planned from the playbook, the package manifest and the fresh facts), start only when
the change window leaves time for it, run each action through the store's Journal (intent
committed before the op is sent, result after), then verify. Stop requests start no new host
and no new action; a running action is never cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kbfix.planfile import PlanDocument, PlanRefusedError
from kbfix.reboot import restart_and_verify, restart_budget
from kbfix.rollout import SerialStep, batches
from kbfix.run.check import gather
from kbfix.run.options import RunControl, RunOptions, RunOutcome
from kbfix.run.protocols import Engine, HostLike, Progress
from kbfix.run.recovery import earlier_results, recover_chain, recover_crashed, unfinished_hosts
from kbfix.run.results import skipped_result
from kbfix.run.schedule import RunSchedule
from kbfix.run.sources import PlanSource, ResumeSource, WorkSource
from kbfix.store import AuditStore, HostLockedError, StoreError
from kbfix.store.history import use_store_history
from kbfix.window import ChangeWindow
from playbooks.model import ExecutedAction, HostResult, PlannedAction, SkipReason, Status, utc_now


class HostApply:
    """Applies one host's work (the `work` callable of the schedule); see the module docstring."""

    def __init__(self, run: RunSchedule, engine: Engine, source: WorkSource, clock: Callable[[], datetime]) -> None:
        self.run = run
        self.engine = engine
        self.source = source
        self.clock = clock
        self.window: ChangeWindow | None = run.options.window

    def gate(self, host: HostLike) -> HostResult | None:
        """Before contact: the source's own gate, then the window (its planned estimate must fit)."""
        gated = self.source.gate(host)
        if gated is not None:
            return gated
        expected = self.source.expected_seconds(host)
        if self.window is not None and self.source.may_change(host) and not self.window.can_start(self.clock(), expected):
            return skipped_result(host, SkipReason.WINDOW, f"change window {self.window} does not leave {expected:g} s "
                                  "for this host's planned work", self.source.findings_before(host))
        return None

    def deadline(self, host: HostLike) -> float | None:
        """The host's deadline: the run's plus twice the planned estimate plus a restart's budget."""
        return self.run.deadline(self.source.expected_seconds(host) * 2 + restart_budget(self.run.options.reboot, host))

    def should_stop(self) -> SkipReason | None:
        """Before each action: interrupted when a stop was requested, window when it closed."""
        if self.run.control.stopped:
            return SkipReason.INTERRUPTED
        if self.window is not None and not self.window.contains(self.clock()):
            return SkipReason.WINDOW
        return None

    def __call__(self, host: HostLike) -> HostResult:
        store, run_id = self.run.store, self.run.id
        try:
            store.lock_hosts(run_id, [host.name])
        except HostLockedError as exc:
            return skipped_result(host, SkipReason.LOCKED, str(exc), self.source.findings_before(host))
        try:
            return self._apply(host)
        finally:
            store.unlock_hosts(run_id, [host.name])

    def _apply(self, host: HostLike) -> HostResult:
        store, run_id = self.run.store, self.run.id
        with self.engine.session(host, check_mode=False) as s:
            self.run.step(host.name, "gather")
            fresh = gather(self.engine, s, host)
            store.record_host(run_id, fresh, phase="assess", facts=fresh.facts)
            work = self.source.planned(host, fresh)
            actions = work.planned
            if work.skip_reason is not None:
                return work
            reboot = self.run.options.reboot
            if not actions and self.source.records_plan and reboot.policy != "never" and any(
                    f.status is Status.PENDING_REBOOT for f in work.findings):
                # reboot (issue 21): a resumed host whose remedies are done but still pending a
                # restart (an interrupted wait re-reads first: a host already back is not pending)
                verified = restart_and_verify(self.engine, host, s, work.findings, reboot, store.journal(run_id),
                                              window=self.window, clock=self.clock)
                return work.with_findings(verified, ended=utc_now())
            if not actions:
                return work
            if self.source.records_plan:
                store.record_plan(run_id, host.name, actions, work.facts_digest)
            expected = work.estimated_seconds
            if self.window is not None and not self.window.can_start(self.clock(), expected):
                return skipped_result(host, SkipReason.WINDOW, f"change window {self.window} no longer leaves "
                                      f"{expected:g} s for this host's planned work", work.findings)
            journal = _StepJournal(store.journal(run_id), lambda text: self.run.step(host.name, text), len(actions))
            applied = self.engine.apply(s, host, work, journal, self.should_stop)
            store.record_host(run_id, work.with_findings(applied, ended=utc_now()), phase="apply")
            # reboot (issue 21): restart when --reboot says so and the window allows, then verify
            self.run.step(host.name, "verify")
            verified = restart_and_verify(self.engine, host, s, applied, self.run.options.reboot, store.journal(run_id),
                                          window=self.window, clock=self.clock)
            return work.with_findings(verified, ended=utc_now())


class _StepJournal:
    """The store's journal, telling the display which action a host starts (its intent is written
    before anything is sent, so the step shows from the first byte of the action)."""

    def __init__(self, journal: Any, step: Callable[[str], None], total: int) -> None:
        self._journal = journal
        self._step = step
        self._total = total
        self._n = 0

    def intent(self, host: str, action: PlannedAction) -> None:
        self._n += 1
        self._step(f"{action.advisory} {action.kind.value} {self._n}/{self._total}")
        self._journal.intent(host, action)

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        self._journal.result(host, action, executed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


def _check_plan(store: AuditStore, plan: PlanDocument) -> None:
    """Refuse a plan this store did not make (digest not recorded by a plan run)."""
    digest = plan.digest()
    made_by = store.plan_document_run(digest)
    if made_by is None:
        raise PlanRefusedError(
            f"plan {plan.run_id} (sha256 {digest[:16]}…) is not a plan recorded in the audit store {store.path}: "
            "it was edited, hand-written or made with another store; nothing was sent. Run `kbfix plan` again "
            "and review its output")
    if made_by != plan.run_id:
        raise PlanRefusedError(f"plan file names run {plan.run_id}, but its digest was recorded by run {made_by}; "
                               "nothing was sent")


def run_apply(
    hosts: Sequence[HostLike],
    engine: Engine,
    store: AuditStore,
    options: RunOptions,
    *,
    plan: PlanDocument | None = None,
    resume: str | None = None,
    control: RunControl | None = None,
    progress: Progress | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RunOutcome:
    """Apply a plan (or, with `resume`, finish an interrupted apply) and verify each host.

    plan: a plan made by `run_plan` with THIS store (its digest must be recorded, else
    PlanRefusedError before anything is sent); each host is re-gathered and re-planned, and
    only the plan's approved actions run; a host whose fresh facts digest differs is
    `skipped: drift`, a host not in the plan `skipped: not_in_plan`. resume: the id of an
    earlier apply run; its unfinished hosts are re-gathered and re-planned, minus every action
    that succeeded or whose outcome is unknown. Exactly one of plan/resume.
    A plan run also closes intents that crashed earlier runs left open on its hosts and does not
    repeat those actions. Window: a host starts only when `window.can_start(clock(), its
    estimated seconds)`, else `skipped: window`; an action never starts outside the window; a
    running one is never cut. Raises ValueError when neither or both of plan/resume are given,
    PlanRefusedError (a ValueError) for an unrecorded plan, StoreError when the run to resume
    is still alive in another process.
    """
    if (plan is None) == (resume is None):
        raise ValueError("run_apply needs exactly one of plan= or resume=")
    if plan is not None:
        _check_plan(store, plan)
    if resume is not None and store.run_is_live(resume):
        raise StoreError(f"run {resume} is still running in another kbfix process; let it finish or stop it first")
    if options.batches is None and plan is not None:
        # The batch layout this rollout uses, recorded so `--resume` continues in the same batches.
        options.batches = [[h.name for h in group] for group in
                           batches(list(hosts), options.serial or [SerialStep(100.0, percent=True)])]
    if options.batches is not None:
        options.recorded["batches"] = options.batches
    run = RunSchedule("apply", store, options, control, progress, resumes=resume)
    # windows (issue 13 item 1): "workaround done" comes from the store (read for all hosts at once)
    use_store_history(engine, store, [h.name for h in hosts])
    source: WorkSource
    work_on: list[HostLike] = list(hosts)
    earlier: list[HostResult] = []
    if plan is not None:
        source = PlanSource(plan, engine, recover_crashed(store, [h.name for h in hosts], run.id))
        scope = {h.name for h in hosts}
        for e in plan.hosts:
            # The apply run records its own copy of the plan it follows: its scope, for audit and resume.
            if e.host in scope and e.planned:
                store.record_plan(run.id, e.host, e.planned, e.facts_digest)
    else:
        assert resume is not None  # one of plan/resume, checked above
        recovery = recover_chain(store, resume, run.id)
        source = ResumeSource(engine, recovery)
        unfinished = unfinished_hosts(store, recovery)
        earlier = earlier_results(store, recovery.runs, [h.name for h in hosts if h.name not in unfinished])
        work_on = [h for h in hosts if h.name in unfinished]
    worker = HostApply(run, engine, source, clock)
    run.estimates({h.name: source.expected_seconds(h) for h in work_on})  # the display's time left (kbfix.eta)
    # The links run inside the rollout (before the display's totals), also after a stop; a resume
    # relinks the earlier run's clients whose server it completes.
    results = run.rollout(work_on, worker, gate=worker.gate, deadline_of=worker.deadline,
                          findings_of=source.findings_before, link=engine, link_scope=hosts, earlier=earlier)
    return run.finish(results, plan)
