"""Run orchestration: check, plan and apply over many hosts, as values, with an audit trail.

`run_check`, `run_plan` and `run_apply` take hosts (inventory `Host`s or anything with the same
attributes), an `Engine` (the playbooks behind a small interface; `kbfix.engine.PlaybookEngine`
is the real one), an `AuditStore` and `RunOptions`, and return a `RunOutcome` (RunInfo + one
HostResult per host). The CLI and `kbfix demo` are thin layers over them.

Per host: ONE session (one WinRM shell), gather in one request, assess, (plan), store. Apply:
per host re-gather first, skip with `skipped: drift` when the facts digest no longer matches
the plan, start only inside the change window and only when the plan's estimate ends before it
closes, take the host lock, run each action through the store's Journal (intent committed
before the op is sent, result after), then verify. A host's exception becomes its result
(failed/unreachable/unknown), never a crash of the run. Stop requests (Ctrl-C, SIGTERM,
`RunControl.request_stop`) start no new host, let running ones finish within a grace period,
and end the run as `interrupted`. `resume=RUN` closes the open intents of RUN as `unknown`,
re-gathers its unfinished hosts and never re-runs an action that already succeeded or whose
outcome is unknown.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from kbfix import __version__
from kbfix.exitcodes import ExitCode
from kbfix.gctune import tune_for_fleet
from kbfix.planfile import HostPlan, PlanDocument
from kbfix.reboot import pending_after_resume, restart_and_verify, restart_budget  # reboot (issue 21)
from kbfix.rollout import SerialStep, batch_failed, batches, run_concurrently
from kbfix.runinfo import RunInfo, RunKind
from kbfix.store import (
    AuditStore,
    HostLockedError,
    OpenIntent,
    StoreError,
    StoreJournal,
    new_run_id,
    operator_name,
)
from kbfix.store.history import use_store_history  # windows (issue 13 item 1)
from kbfix.window import ChangeWindow
from playbooks.model import ExecutedAction, Finding, HostError, HostResult, PlannedAction, Status, worst
from playbooks.reboot import RebootOptions  # reboot (issue 21)

# Statuses an operator still has to act on after a run (exit code 3), and skip reasons that
# mean "this run left work undone" rather than "out of scope".
RUN_SKIPS = frozenset({"window", "drift", "max_fail", "interrupted", "locked", "not_in_plan"})


class HostLike(Protocol):
    """What the runner reads from an inventory host (`inventory.Host`)."""

    name: str
    roles: Any
    site: str | None
    vars: Mapping[str, Any]
    endpoint: Any
    skipped_reason: str | None


class AssessmentLike(Protocol):
    """What the runner reads from a playbooks `Assessment`."""

    roles: Any
    os: Any
    findings: list[Finding]
    facts: Any
    facts_digest: str | None


class Engine(Protocol):
    """The playbooks as the runner uses them (see kbfix.engine.PlaybookEngine)."""

    def session(self, host: HostLike, *, check_mode: bool) -> AbstractContextManager[Any]:
        """A context manager giving one open session to the host (one shell)."""
        ...

    def ping(self, session: Any, host: HostLike) -> dict[str, Any]:
        """One trivial agent request; returns the host identity the agent reported."""
        ...

    def assess(self, session: Any, host: HostLike) -> AssessmentLike:
        """Gather (one request) and assess."""
        ...

    def plan(self, host: HostLike, assessment: AssessmentLike) -> AssessmentLike:
        """The assessment with planned actions on its findings."""
        ...

    def with_findings(self, assessment: AssessmentLike, findings: list[Finding]) -> AssessmentLike:
        """The assessment with its findings replaced (a stored plan's findings)."""
        ...

    def apply(
        self,
        session: Any,
        host: HostLike,
        assessment: AssessmentLike,
        journal: StoreJournal,
        should_stop: Callable[[], bool],
    ) -> list[Finding]:
        """Run the planned actions through the journal; return the findings with `executed`."""
        ...

    def verify(self, session: Any, host: HostLike, before: list[Finding]) -> list[Finding]:
        """Re-gather and return the post-state findings (`verification` evidence filled)."""
        ...

    def advisories(self) -> dict[str, dict[str, Any]]:
        """`{advisory id: {title, sources, severity, summary}}` for reports."""
        ...

    def link(self, results: list[HostResult], facts: Mapping[str, Mapping[str, Any]],
             addresses: Mapping[str, str]) -> list[HostResult]:
        """Cross-host verdicts after all hosts ran (a WSUS client follows its server when that
        server is in the run); returns the results, changed where a link applies."""
        ...


def kbfix_version() -> str:
    """The installed kbfix version (package metadata), `0+unknown` when not installed."""
    return __version__


def utc_now() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(timezone.utc)


@dataclass
class RunOptions:
    """How a run runs. Times are seconds.

    forks: hosts in flight at once; host_deadline_s: the longest one host may take for gather
    and verify (apply adds the plan's estimate); serial: batch steps (None: one batch);
    max_fail_percent: stop before the next batch when a batch's failures exceed it;
    max_per_site: hosts in flight per site; window: the change window (apply only);
    grace_s: how long running hosts may finish after a stop request; recorded: the options to
    record in the run (no secrets; the store redacts secret-looking keys anyway); reboot: when
    and how apply restarts hosts (playbooks.reboot.RebootOptions; default never).
    """

    forks: int = 20
    host_deadline_s: float | None = 600.0
    serial: list[SerialStep] | None = None
    max_fail_percent: float | None = None
    max_per_site: int | None = None
    window: ChangeWindow | None = None
    grace_s: float = 60.0
    inventory_hash: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    reboot: RebootOptions = field(default_factory=RebootOptions)  # reboot (issue 21): apply only
    # evidence (issue 15): who and why, recorded on the run (operator None: user@machine).
    operator: str | None = None
    change_ticket: str | None = None
    approved_by: str | None = None


class RunControl:
    """A run's stop switch: set by signals or by a caller; read by the scheduler and by apply
    before every action. `reason` says why (`SIGINT`, `SIGTERM`, ...)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop starting new work."""
        if self.reason is None:
            self.reason = reason
        self._event.set()

    @property
    def stopped(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    @contextlib.contextmanager
    def signals(self) -> Iterator[RunControl]:
        """Within the block, SIGINT/SIGTERM request a stop; a second SIGINT interrupts at once.
        Only installs handlers when called from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            if self.stopped and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request_stop(name)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class Progress(Protocol):
    """What the runner reports while running (kbfix.progress implements it)."""

    def start(self, kind: str, total: int, batches: int) -> None:
        """The run starts over `total` hosts in `batches` batches."""
        ...

    def batch(self, index: int, hosts: int) -> None:
        """Batch `index` (0-based) with `hosts` hosts starts."""
        ...

    def host_done(self, result: HostResult) -> None:
        """One host finished (any status)."""
        ...

    def stop(self) -> None:
        """The run is over."""
        ...


class _NoProgress:
    def start(self, kind: str, total: int, batches: int) -> None:
        pass

    def batch(self, index: int, hosts: int) -> None:
        pass

    def host_done(self, result: HostResult) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class RunOutcome:
    """A finished run: its identity (as stored) and one result per host, in host order."""

    info: RunInfo
    results: list[HostResult]
    plan: PlanDocument | None = None


# ---- converting to values -------------------------------------------------------------------------


def _address(host: HostLike) -> str | None:
    ep = getattr(host, "endpoint", None)
    return getattr(ep, "address", None)


def result_from_assessment(
    host: HostLike, a: AssessmentLike, *, findings: list[Finding] | None = None, started: datetime | None = None
) -> HostResult:
    """The HostResult of an assessment (status: the worst of its findings)."""
    found = list(a.findings if findings is None else findings)
    return HostResult(
        host=host.name,
        address=_address(host),
        site=host.site,
        roles=sorted(a.roles or []),
        os=dict(a.os or {}),
        status=worst([f.status for f in found]),
        findings=found,
        facts_digest=a.facts_digest,
        started=started or utc_now(),
        ended=utc_now(),
    )


def error_result(host: HostLike, exc: BaseException, *, started: datetime | None = None) -> HostResult:
    """The HostResult of a host whose work raised `exc`.

    Remoting errors keep their kind (`unreachable` and `timeout` → status unreachable, `unknown`
    → unknown, others → failed); any other exception is `failed` with kind `internal`.
    """
    kind = getattr(exc, "kind", None)
    hresult = getattr(exc, "hresult", None)
    if not isinstance(kind, str):
        kind, message = "internal", f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    status = {"unreachable": Status.UNREACHABLE, "timeout": Status.UNREACHABLE, "unknown": Status.UNKNOWN}.get(
        kind, Status.FAILED
    )
    return HostResult(
        host=host.name,
        address=_address(host),
        site=host.site,
        status=status,
        error=HostError(kind=kind, message=message, hresult=hresult if isinstance(hresult, str) else None),
        started=started or utc_now(),
        ended=utc_now(),
    )


def skipped_result(host: HostLike, reason: str, detail: str, findings: Sequence[Finding] = ()) -> HostResult:
    """A host the run did not work on: findings that still needed work become `skipped` with
    `skip_reason`; compliant/not-applicable ones keep their status. Without findings the host
    is `skipped` with an error of kind `skipped` carrying `detail`."""
    out: list[Finding] = []
    for f in findings:
        if f.status.is_failure or f.planned:
            out.append(f.model_copy(update={"status": Status.SKIPPED, "skip_reason": reason, "reason": f"{detail}; {f.reason}"}))
        else:
            out.append(f)
    status = worst([f.status for f in out]) if out else Status.SKIPPED
    if out and status is not Status.SKIPPED and any(f.status is Status.SKIPPED for f in out):
        status = Status.SKIPPED
    return HostResult(
        host=host.name,
        address=_address(host),
        site=host.site,
        status=status,
        findings=out,
        error=None if out else HostError(kind="skipped", message=f"{reason}: {detail}"),
        ended=utc_now(),
    )


def skip_reason(result: HostResult) -> str | None:
    """The run-level skip reason of a skipped host (`window`, `drift`, ...), else None."""
    for f in result.findings:
        if f.skip_reason:
            return f.skip_reason
    if result.error and result.error.kind == "skipped":
        return result.error.message.split(":", 1)[0].strip()
    return None


def exit_code(results: Sequence[HostResult]) -> int:
    """The CLI exit code of a run's results.

    4: some host unreachable, failed or unknown; else 3: some host non-compliant, pending a
    reboot, or skipped by this run (window, drift, max-fail, interrupted, locked); else 0 (all
    compliant, remediated, mitigated — a documented workaround counts as compliant — or not
    applicable; hosts the inventory disables are out of scope).
    """
    statuses = [r.status for r in results]
    if any(s in (Status.UNREACHABLE, Status.FAILED, Status.UNKNOWN) for s in statuses):
        return ExitCode.FAILED
    if any(s in (Status.NON_COMPLIANT, Status.PENDING_REBOOT) for s in statuses):
        return ExitCode.NON_COMPLIANT
    if any(r.status is Status.SKIPPED and skip_reason(r) in RUN_SKIPS for r in results):
        return ExitCode.NON_COMPLIANT
    return ExitCode.OK


# ---- the run skeleton -------------------------------------------------------------------------------


class _Run:
    """Shared machinery of one run: identity, store writes, batches, stop handling."""

    def __init__(
        self,
        kind: RunKind,
        store: AuditStore,
        options: RunOptions,
        control: RunControl | None,
        progress: Progress | None,
        resumes: str | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self._max_fail_detail = ""
        self.control = control or RunControl()
        self.progress = progress or _NoProgress()
        self.info = RunInfo(
            id=new_run_id(),
            kind=kind,
            started=utc_now(),
            operator=options.operator or operator_name(),  # evidence (issue 15)
            change_ticket=options.change_ticket,
            approved_by=options.approved_by,
            kbfix_version=kbfix_version(),
            inventory_hash=options.inventory_hash,
            window=str(options.window) if options.window else None,
            options=dict(options.recorded),
        )
        store.begin_run(self.info, resumes=resumes)
        tune_for_fleet()  # kbfix.gctune: fewer young collections over thousands of host answers

    def deadline(self, extra_s: float = 0.0) -> float | None:
        base = self.options.host_deadline_s
        return None if base is None else base + extra_s

    def rollout(
        self,
        hosts: Sequence[HostLike],
        work: Callable[[HostLike], HostResult],
        *,
        gate: Callable[[HostLike], HostResult | None] = lambda _h: None,
        deadline_of: Callable[[HostLike], float | None] | None = None,
        findings_of: Callable[[HostLike], Sequence[Finding]] = lambda _h: (),
    ) -> list[HostResult]:
        """Run `work` over hosts in serial batches with forks, caps and the max-fail stop."""
        opts = self.options
        groups = batches(list(hosts), opts.serial or [SerialStep(100.0, percent=True)])
        self.progress.start(self.info.kind, len(hosts), len(groups))
        by_name: dict[str, HostResult] = {}
        stopped_for: str | None = None
        for index, group in enumerate(groups):
            if stopped_for is not None or self.control.stopped:
                reason = stopped_for or "interrupted"
                detail = self._stop_detail(reason)
                for h in group:
                    by_name[h.name] = self._done(skipped_result(h, reason, detail, findings_of(h)))
                continue
            self.progress.batch(index, len(group))
            results = run_concurrently(
                group,
                lambda h: self._guard(h, work),
                forks=opts.forks,
                site_of=lambda h: h.site,
                max_per_site=opts.max_per_site,
                deadline_of=deadline_of or (lambda _h: self.deadline()),
                should_stop=lambda: self.control.stopped,
                gate=gate,
                on_error=lambda h, exc: error_result(h, exc),
                on_timeout=lambda h: self._timed_out(h),
                on_skip=lambda h: skipped_result(h, "interrupted", self._stop_detail("interrupted"), findings_of(h)),
                on_done=lambda _h, r: self._done(r),
                grace_seconds=opts.grace_s,
            )
            for h, r in zip(group, results, strict=True):
                by_name[h.name] = r
            failed = sum(1 for r in results if r.status.is_failure)
            if index + 1 < len(groups) and batch_failed(failed, len(group), opts.max_fail_percent):
                stopped_for = "max_fail"
                self._max_fail_detail = (
                    f"stopped after batch {index + 1}: {failed} of {len(group)} hosts failed, "
                    f"more than --max-fail-percent {opts.max_fail_percent:g}"
                )
                self.store.note(self.info.id, self._max_fail_detail)
        self.progress.stop()
        return [by_name[h.name] for h in hosts]

    def _stop_detail(self, reason: str) -> str:
        if reason == "max_fail":
            return self._max_fail_detail
        return f"run interrupted ({self.control.reason or 'stop requested'}) before this host started"

    def _guard(self, host: HostLike, work: Callable[[HostLike], HostResult]) -> HostResult:
        if host.skipped_reason:
            return HostResult(host=host.name, site=host.site, status=Status.SKIPPED,
                              error=HostError(kind="skipped", message=f"inventory: {host.skipped_reason}"))
        if host.endpoint is None:
            return HostResult(host=host.name, site=host.site, status=Status.FAILED,
                              error=HostError(kind="config", message="no endpoint (address/credentials) in the inventory"))
        return work(host)

    def _timed_out(self, host: HostLike) -> HostResult:
        if self.control.stopped:
            msg = f"still running {self.options.grace_s:g} s after the stop request; left to finish, outcome not awaited"
            return HostResult(host=host.name, address=_address(host), site=host.site, status=Status.UNKNOWN,
                              error=HostError(kind="interrupted", message=msg), ended=utc_now())
        return HostResult(host=host.name, address=_address(host), site=host.site, status=Status.UNREACHABLE,
                          error=HostError(kind="timeout", message="host did not finish within its deadline"),
                          ended=utc_now())

    def _done(self, result: HostResult) -> HostResult:
        self.store.record_host(self.info.id, result, phase="final")
        self.progress.host_done(result)
        return result

    def link(
        self, engine: Engine, hosts: Sequence[HostLike], results: list[HostResult], facts: Mapping[str, Mapping[str, Any]]
    ) -> list[HostResult]:
        """Apply the engine's cross-host links; a changed host gets a new `final` row (the
        latest row wins, nothing is updated in place)."""
        if self.control.stopped:
            return results
        seen = Counter(_address(h) for h in hosts)
        # An address shared by several inventory hosts (a lab, NAT) cannot identify one of them.
        addresses = {h.name: a for h in hosts if (a := _address(h)) and seen[a] == 1}
        linked = engine.link(results, facts, addresses)
        out: list[HostResult] = []
        for old, new in zip(results, linked, strict=True):
            if new != old:
                self.store.record_host(self.info.id, new, phase="final")
            out.append(new)
        return out

    def finish(self, results: list[HostResult], plan: PlanDocument | None = None) -> RunOutcome:
        if self.control.stopped:
            self.store.end_run(self.info.id, "interrupted", self.control.reason)
        else:
            self.store.end_run(self.info.id, "completed")
        return RunOutcome(self.store.run_info(self.info.id), results, plan)


# ---- check and plan -----------------------------------------------------------------------------------


def run_ping(hosts: Sequence[HostLike], engine: Engine, options: RunOptions) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Reach and authenticate each host: `(host, error text or None, agent host identity)`.
    Not stored (nothing about the host's compliance is learned)."""

    def work(h: HostLike) -> tuple[str, str | None, dict[str, Any]]:
        if h.endpoint is None:
            return (h.name, h.skipped_reason or "no endpoint in the inventory", {})
        with engine.session(h, check_mode=True) as s:
            return (h.name, None, engine.ping(s, h))

    return run_concurrently(
        list(hosts),
        work,
        forks=options.forks,
        site_of=lambda h: h.site,
        max_per_site=options.max_per_site,
        deadline_of=lambda _h: options.host_deadline_s,
        on_error=lambda h, exc: (h.name, str(exc) or type(exc).__name__, {}),
        on_timeout=lambda h: (h.name, "no answer within the deadline", {}),
        on_skip=lambda h: (h.name, "interrupted", {}),
    )


def _assess_host(engine: Engine, store: AuditStore, run_id: str, host: HostLike, *, planning: bool) -> tuple[HostResult, Any]:
    started = utc_now()
    with engine.session(host, check_mode=True) as s:
        a = engine.assess(s, host)
    if planning:
        a = engine.plan(host, a)
    result = result_from_assessment(host, a, started=started)
    store.record_host(run_id, result, phase="assess", facts=_facts_dict(a))
    if planning:
        actions = [p for f in a.findings for p in f.planned]
        if actions:
            store.record_plan(run_id, host.name, actions, a.facts_digest)
    return result, a


def _facts_dict(a: AssessmentLike) -> dict[str, Any]:
    facts = a.facts
    if hasattr(facts, "model_dump"):
        facts = facts.model_dump(mode="json")
    return facts if isinstance(facts, dict) else {"value": facts}


def run_check(
    hosts: Sequence[HostLike],
    engine: Engine,
    store: AuditStore,
    options: RunOptions,
    *,
    control: RunControl | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Read-only: gather, assess and store every host (sessions opened in check mode)."""
    run = _Run("check", store, options, control, progress)
    use_store_history(engine, store)  # windows (issue 13 item 1): "workaround done" comes from the store
    facts: dict[str, dict[str, Any]] = {}

    def work(h: HostLike) -> HostResult:
        result, a = _assess_host(engine, store, run.info.id, h, planning=False)
        facts[h.name] = _facts_dict(a)  # one key per host: safe across worker threads
        return result

    results = run.link(engine, hosts, run.rollout(hosts, work), facts)
    return run.finish(results)


def run_plan(
    hosts: Sequence[HostLike],
    engine: Engine,
    store: AuditStore,
    options: RunOptions,
    *,
    control: RunControl | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """A check that also plans: every host's exact actions with the facts they rest on.
    Sessions are opened in check mode, so remoting refuses any mutating op. The outcome's
    `plan` is the reviewable plan document (write it with `PlanDocument.write`)."""
    run = _Run("plan", store, options, control, progress)
    use_store_history(engine, store)  # windows (issue 13 item 1): "workaround done" comes from the store
    entries: dict[str, HostPlan] = {}
    lock = threading.Lock()

    def work(h: HostLike) -> HostResult:
        result, a = _assess_host(engine, store, run.info.id, h, planning=True)
        with lock:
            entries[h.name] = HostPlan(host=h.name, site=h.site, facts_digest=a.facts_digest,
                                       facts=_facts_dict(a), findings=list(a.findings), status=result.status,
                                       roles=result.roles, os=result.os)
        return result

    results = run.link(engine, hosts, run.rollout(hosts, work), {n: e.facts for n, e in entries.items()})
    by_name = {r.host: r for r in results}
    for h in hosts:
        r = by_name.get(h.name)
        if h.name not in entries and r is not None:
            # Unreachable or failed while planning: in the plan with that verdict and no actions,
            # so the apply run reports the host as it was found instead of "skipped".
            entries[h.name] = HostPlan(host=h.name, site=h.site, status=r.status, error=r.error)
    for name, e in entries.items():
        if by_name[name].findings != e.findings:  # a linked client: the plan shows the same verdict
            entries[name] = e.model_copy(update={"findings": by_name[name].findings, "status": by_name[name].status})
    plan = PlanDocument(
        run_id=run.info.id,
        created=run.info.started,
        kbfix_version=run.info.kbfix_version,
        inventory_hash=options.inventory_hash,
        hosts=[entries[h.name] for h in hosts if h.name in entries],
    )
    return run.finish(results, plan)


# ---- apply ----------------------------------------------------------------------------------------------


def _expected_seconds(findings: Sequence[Finding]) -> float:
    return sum(p.estimated_seconds for f in findings for p in f.planned)


def _has_work(findings: Sequence[Finding]) -> bool:
    return any(f.planned for f in findings)


@dataclass
class _ResumeState:
    """What earlier runs in a resume chain tell about each host's actions."""

    runs: list[str]
    succeeded: dict[str, set[tuple[str, str | None]]]  # host → action keys with outcome success / reboot_required
    unknown: dict[str, set[tuple[str, str | None]]]  # host → action keys whose outcome was never recorded


def action_key(action: PlannedAction) -> tuple[str, str | None]:
    """What makes two planned actions "the same" across runs: the action id and the package's
    SHA-256 (a re-released package, e.g. KB954960's of 1 Aug 2008, is a different action)."""
    return (action.id, action.package.sha256.lower() if action.package else None)


def _close_open_intents(
    store: AuditStore, opens: Sequence[OpenIntent], new_run: str
) -> dict[str, set[tuple[str, str | None]]]:
    """Close dangling intents as `unknown` (append-only: a result row, so the old run is
    consistent) and the runs they belong to as interrupted; returns host → action ids."""
    for rid in sorted({oi.run_id for oi in opens}):
        if store.run_info(rid).state == "running":
            # Started but never closed: the process was killed (live runs are never passed here).
            store.end_run(rid, "interrupted", f"the kbfix process ended without closing this run; re-read by {new_run}")
    unknown: dict[str, set[tuple[str, str | None]]] = {}
    for oi in opens:
        store.record_result(oi.run_id, oi.host, oi.action.id, ExecutedAction(
            action_id=oi.action.id, outcome="unknown", started=datetime.fromisoformat(oi.at), ended=utc_now(),
            detail=f"kbfix stopped before the answer was recorded; host state re-read by run {new_run}"))
        unknown.setdefault(oi.host, set()).add(action_key(oi.action))
    return unknown


def _resume_state(store: AuditStore, run_id: str, new_run: str) -> _ResumeState:
    """The chain of runs `run_id` resumed (itself first), its open intents closed."""
    chain: list[str] = []
    cur: str | None = run_id
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = store.resumes(cur)
    for rid in chain:
        if store.run_info(rid).state == "running":
            store.end_run(rid, "interrupted", f"the kbfix process ended without closing this run; resumed by {new_run}")
    unknown = _close_open_intents(store, store.open_intents(chain), new_run)
    succeeded: dict[str, set[tuple[str, str | None]]] = {}
    for o in store.outcomes(chain):
        if o.executed.outcome in ("success", "reboot_required"):
            succeeded.setdefault(o.host, set()).add(action_key(o.action))
    return _ResumeState(chain, succeeded, unknown)


def _crashed_state(store: AuditStore, hosts: Sequence[str], new_run: str) -> _ResumeState:
    """For a new apply: intents left open on these hosts by earlier runs that are no longer
    alive (a run still alive holds its hosts' locks, so its hosts are skipped as locked)."""
    opens = [oi for oi in store.open_intents_for_hosts(hosts) if not store.run_is_live(oi.run_id)]
    unknown = _close_open_intents(store, opens, new_run)
    return _ResumeState(sorted({oi.run_id for oi in opens}), {}, unknown)


def _resume_filter(host: str, findings: list[Finding], rs: _ResumeState) -> list[Finding]:
    """Drop planned actions that already succeeded (or may have run) in the resumed chain; the
    finding then says why nothing was re-run."""
    done = rs.succeeded.get(host, set())
    maybe = rs.unknown.get(host, set()) - done
    out: list[Finding] = []
    for f in findings:
        keep = [p for p in f.planned if action_key(p) not in done and action_key(p) not in maybe]
        dropped = [p for p in f.planned if p not in keep]
        if not dropped:
            out.append(f)
            continue
        notes = []
        if any(action_key(p) in done for p in dropped):
            notes.append("already succeeded in run(s) " + ", ".join(rs.runs) + ", yet the host still is not fixed: not re-run")
        if any(action_key(p) in maybe for p in dropped):
            notes.append("an earlier attempt's outcome is unknown and the host still is not fixed: not re-run "
                         "automatically; check the host (installer may still be running), then apply again")
        status = Status.UNKNOWN if any(action_key(p) in maybe for p in dropped) else Status.FAILED
        out.append(f.model_copy(update={"planned": keep, "status": status if not keep else f.status,
                                        "reason": f"{f.reason}; " + "; ".join(notes)}))
    return out


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

    plan: apply exactly these actions; a host whose re-gathered facts digest differs is
    `skipped: drift`, a host not in the plan `skipped: not_in_plan`. resume: the id of an
    earlier apply run; its hosts are re-gathered and re-planned from their current state,
    minus every action that succeeded or whose outcome is unknown. Exactly one of plan/resume.
    A new (plan) run also closes intents that crashed earlier runs left open on its hosts and
    does not repeat those actions where the re-read state does not show them done (`unknown`).
    Window: a host starts only when `window.can_start(now, its estimated seconds)`, else
    `skipped: window`; an action never starts outside the window; a running one is never cut.
    Raises ValueError when neither or both of plan/resume are given, StoreError when the run to
    resume is still alive in another process.
    """
    if (plan is None) == (resume is None):
        raise ValueError("run_apply needs exactly one of plan= or resume=")
    if resume is not None and store.run_is_live(resume):
        raise StoreError(f"run {resume} is still running in another kbfix process; let it finish or stop it first")
    run = _Run("apply", store, options, control, progress, resumes=resume)
    use_store_history(engine, store)  # windows (issue 13 item 1): "workaround done" comes from the store
    window = options.window
    rs = _resume_state(store, resume, run.info.id) if resume is not None else None
    crashed = _crashed_state(store, [h.name for h in hosts], run.info.id) if resume is None else None
    entries = {e.host: e for e in plan.hosts} if plan is not None else {}
    facts: dict[str, dict[str, Any]] = {n: dict(e.facts) for n, e in entries.items()}
    scope = {h.name for h in hosts}
    for e in entries.values():
        # The apply run records its own copy of the plan it follows: its scope, for audit and resume.
        if e.host in scope and _has_work(e.findings):
            store.record_plan(run.info.id, e.host, [p for f in e.findings for p in f.planned], e.facts_digest)
    if rs is not None:
        # Resume: the hosts the resumed run had planned work for and did not finish cleanly.
        planned_hosts = {h for rid in rs.runs for h, _a, _d in store.planned(rid)}
        done = (Status.REMEDIATED, Status.COMPLIANT, Status.NOT_APPLICABLE, Status.MITIGATED)
        latest: dict[str, Status] = {}
        for rid in reversed(rs.runs):  # oldest first: a later run's verdict wins
            latest.update({r.host: r.status for r in store.host_results(rid)})
        hosts = [h for h in hosts if h.name in planned_hosts and latest.get(h.name) not in done]

    def findings_of(h: HostLike) -> Sequence[Finding]:
        e = entries.get(h.name)
        return e.findings if e else ()

    def window_open() -> bool:
        return window is None or window.contains(clock())

    def gate(h: HostLike) -> HostResult | None:
        if plan is not None:
            e = entries.get(h.name)
            if e is None:
                return skipped_result(h, "not_in_plan", "host is not in the plan (unreachable or failed when it was "
                                      "made, or added to the inventory since)")
            if not _has_work(e.findings):
                # Nothing to do: the plan's verdict stands (no connection needed).
                return HostResult(host=h.name, address=_address(h), site=h.site, status=e.status, roles=e.roles,
                                  os=e.os, findings=e.findings, facts_digest=e.facts_digest, error=e.error,
                                  ended=utc_now())
            expected = _expected_seconds(e.findings)
        else:
            expected = 0.0
        if window is not None and not window.can_start(clock(), expected):
            return skipped_result(h, "window", f"change window {window} does not leave {expected:g} s "
                                  "for this host's planned work", findings_of(h))
        return None

    def work(h: HostLike) -> HostResult:
        started = utc_now()
        try:
            store.lock_hosts(run.info.id, [h.name])
        except HostLockedError as exc:
            return skipped_result(h, "locked", str(exc), findings_of(h))
        try:
            return _apply_host(h, started)
        finally:
            store.unlock_hosts(run.info.id, [h.name])

    def _apply_host(h: HostLike, started: datetime) -> HostResult:
        with engine.session(h, check_mode=False) as s:
            a = engine.assess(s, h)
            facts[h.name] = _facts_dict(a)
            store.record_host(run.info.id, result_from_assessment(h, a, started=started), phase="assess",
                              facts=facts[h.name])
            if plan is not None:
                e = entries[h.name]
                if a.facts_digest != e.facts_digest:
                    return skipped_result(h, "drift", f"facts changed since the plan (digest {e.facts_digest} → "
                                          f"{a.facts_digest}); re-run plan", e.findings)
                findings = list(e.findings)
                if crashed is not None and h.name in crashed.unknown:
                    findings = _resume_filter(h.name, findings, crashed)
                a = engine.with_findings(a, findings)
            else:
                assert rs is not None  # one of plan/resume, checked above
                a = engine.plan(h, a)
                a = engine.with_findings(a, _resume_filter(h.name, list(a.findings), rs))
            if rs is not None:  # reboot (issue 21): done remedies awaiting a restart read pending_reboot
                a = engine.with_findings(a, pending_after_resume(a.findings, a.facts or {}))
            actions = [p for f in a.findings for p in f.planned]
            if not actions and rs is not None and options.reboot.policy != "never" and any(
                    f.status is Status.PENDING_REBOOT for f in a.findings):
                # reboot (issue 21): a resumed host whose remedies are done but still pending a
                # restart (an interrupted wait re-reads first: a host already back is not pending)
                verified = restart_and_verify(engine, h, s, a.findings, options.reboot, store.journal(run.info.id),
                                              window=window, clock=clock)
                return result_from_assessment(h, a, findings=verified, started=started)
            if not actions:
                return result_from_assessment(h, a, started=started)
            if rs is not None:
                store.record_plan(run.info.id, h.name, actions, a.facts_digest)
            expected = _expected_seconds(a.findings)
            if window is not None and not window.can_start(clock(), expected):
                return skipped_result(h, "window", f"change window {window} no longer leaves {expected:g} s for "
                                      "this host's planned work", a.findings)
            applied = engine.apply(s, h, a, store.journal(run.info.id),
                                   lambda: run.control.stopped or not window_open())
            store.record_host(run.info.id, result_from_assessment(h, a, findings=applied, started=started), phase="apply")
            # reboot (issue 21): restart when --reboot says so and the window allows, then verify
            verified = restart_and_verify(engine, h, s, applied, options.reboot, store.journal(run.info.id),
                                          window=window, clock=clock)
            return result_from_assessment(h, a, findings=verified, started=started)

    def deadline_of(h: HostLike) -> float | None:
        return run.deadline(_expected_seconds(findings_of(h)) * 2 + restart_budget(options.reboot))  # reboot (issue 21)

    results = run.rollout(hosts, work, gate=gate, deadline_of=deadline_of, findings_of=findings_of)
    return run.finish(run.link(engine, hosts, results, facts), plan)


__all__ = [
    "Engine",
    "Progress",
    "RunControl",
    "RunOptions",
    "RunOutcome",
    "error_result",
    "exit_code",
    "kbfix_version",
    "result_from_assessment",
    "run_apply",
    "run_check",
    "run_ping",
    "run_plan",
    "skip_reason",
    "skipped_result",
]
