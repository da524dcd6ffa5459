"""One run's skeleton: its identity in the store, serial batches with forks and per-site caps,
the max-fail stop, stop requests, cross-host links, and the run's end.

`RunSchedule.rollout(hosts, work, ...)` calls `work(host)` for every host the inventory lets the
run work on; every result, whatever made it, is recorded as the host's `final` row and shown
by the progress display as it arrives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from kbfix.gctune import tune_for_fleet
from kbfix.planfile import PlanDocument
from kbfix.rollout import SerialStep, batch_failed, batches, batches_by_layout, run_concurrently
from kbfix.run.options import RunControl, RunOptions, RunOutcome, kbfix_version
from kbfix.run.protocols import Engine, HostLike, NoProgress, Progress
from kbfix.run.results import address_of, error_result, inventory_result, skipped_result, timeout_result
from kbfix.runinfo import RunInfo, RunKind
from kbfix.store import AuditStore, new_run_id, operator_name
from playbooks.model import Finding, HostResult, SkipReason, utc_now

Work = Callable[[HostLike], HostResult]
Gate = Callable[[HostLike], HostResult | None]


class RunSchedule:
    """Shared machinery of one run: identity, store writes, batches, stop handling.

    Creating it records the run (`begin_run`) in `store`. Raises StoreError from the store.
    """

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
        # cost (issue 19): a check stores each host's facts with its `final` row (one write per
        # host instead of an `assess` row with the facts and then the same result as `final`).
        self.facts_in_final = False
        self._max_fail_detail = ""
        self.control = control or RunControl()
        self.progress: Progress = progress or NoProgress()
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

    @property
    def id(self) -> str:
        """The run id."""
        return self.info.id

    def deadline(self, extra_s: float = 0.0) -> float | None:
        """The per-host deadline in seconds plus `extra_s` (None: no deadline)."""
        base = self.options.host_deadline_s
        return None if base is None else base + extra_s

    def rollout(
        self,
        hosts: Sequence[HostLike],
        work: Work,
        *,
        gate: Gate = lambda _h: None,
        deadline_of: Callable[[HostLike], float | None] | None = None,
        findings_of: Callable[[HostLike], Sequence[Finding]] = lambda _h: (),
        link: Engine | None = None,
        link_scope: Sequence[HostLike] | None = None,
        earlier: Sequence[HostResult] = (),
    ) -> list[HostResult]:
        """Run `work` over hosts in serial batches with forks, caps and the max-fail stop.

        gate: a result for a host without contacting it (or None to go on); findings_of: the
        findings a host that is never started keeps (as `skipped`). link: when given, the
        engine's cross-host links run (`self.link`) before the display's totals, so the live
        counts and the final table agree, also after a stop; link_scope and earlier go to
        `self.link`. Returns results in host order, followed by any `earlier` host relinked.
        """
        opts = self.options
        groups = (batches_by_layout(list(hosts), opts.batches, lambda h: h.name) if opts.batches is not None
                  else batches(list(hosts), opts.serial or [SerialStep(100.0, percent=True)]))
        self.progress.start(self.info.kind, len(hosts), len(groups))
        by_name: dict[str, HostResult] = {}
        stopped_for: SkipReason | None = None
        for index, group in enumerate(groups):
            if stopped_for is not None or self.control.stopped:
                reason = stopped_for or SkipReason.INTERRUPTED
                for h in group:
                    by_name[h.name] = self._done(skipped_result(h, reason, self._stop_detail(reason), findings_of(h)))
                continue
            self.progress.batch(index, len(group))
            results = run_concurrently(
                group,
                lambda h: inventory_result(h) or self._started(h, work),
                forks=opts.forks,
                site_of=lambda h: h.site,
                max_per_site=opts.max_per_site,
                deadline_of=deadline_of or (lambda _h: self.deadline()),
                should_stop=self._poll,
                gate=gate,
                on_error=lambda h, exc: error_result(h, exc),
                on_timeout=lambda h: timeout_result(h, stopping=self.control.stopped, grace_s=opts.grace_s),
                on_skip=lambda h: skipped_result(h, SkipReason.INTERRUPTED,
                                                 self._stop_detail(SkipReason.INTERRUPTED), findings_of(h)),
                on_done=lambda _h, r: self._record(r),
                grace_seconds=opts.grace_s,
            )
            for h, r in zip(group, results, strict=True):
                by_name[h.name] = r
            failed = sum(1 for r in results if r.status.is_failure)
            if index + 1 < len(groups) and batch_failed(failed, len(group), opts.max_fail_percent):
                stopped_for = SkipReason.MAX_FAIL
                self._max_fail_detail = (
                    f"stopped after batch {index + 1}: {failed} of {len(group)} hosts failed, "
                    f"more than --max-fail-percent {opts.max_fail_percent:g}"
                )
                self.store.note(self.info.id, self._max_fail_detail)
        out = [by_name[h.name] for h in hosts]
        if link is not None:
            out = self.link(link, link_scope or hosts, out, earlier=earlier)
        self.progress.stop()
        return out

    def step(self, host: str, text: str) -> None:
        """Tell the display what `host` is doing now (`gather`, `KB954960 install_package 1/2`,
        `verify`); a display without `host_step` ignores it."""
        report = getattr(self.progress, "host_step", None)
        if report is not None:
            report(host, text)

    def estimates(self, seconds: dict[str, float]) -> None:
        """Tell the display the plan's estimated seconds per host (to weight its time left); a
        display without `plan_estimates` ignores them."""
        report = getattr(self.progress, "plan_estimates", None)
        if report is not None:
            report(seconds)

    def _started(self, host: HostLike, work: Work) -> HostResult:
        self.step(host.name, "connect")
        return work(host)

    def _stop_detail(self, reason: SkipReason) -> str:
        if reason is SkipReason.MAX_FAIL:
            return self._max_fail_detail
        return f"run interrupted ({self.control.reason or 'stop requested'}) before this host started"

    def _poll(self) -> bool:
        """The rollout loop's `should_stop` (asked every poll, ≤ 50 ms): also writes the
        deferred final rows of a check that have waited long enough (`AuditStore.flush_due`)."""
        self.store.flush_due()
        return self.control.stopped

    def _record(self, result: HostResult) -> None:
        facts = result.facts if self.facts_in_final and result.facts else None
        # cost (issue 19): a check's final rows are written in groups (AuditStore.record_host
        # `defer`): a check changes nothing on its hosts, so a crash loses only verdicts that a
        # re-run gives back; plan's and apply's rows stay one transaction each (they are the run's truth).
        self.store.record_host(self.info.id, result, phase="final", facts=facts, defer=self.info.kind == "check")
        self.progress.host_done(result)

    def _done(self, result: HostResult) -> HostResult:
        self._record(result)
        return result

    def link(self, engine: Engine, hosts: Sequence[HostLike], results: list[HostResult],
             *, earlier: Sequence[HostResult] = ()) -> list[HostResult]:
        """Apply the engine's cross-host links over the results that carry facts; a changed
        host gets a new `final` row (the latest row wins, nothing is updated in place) and the
        display is told (`host_relinked`), so its counts match the final table.

        Runs after a stop too, over the hosts that finished (a host never started has no facts).
        hosts: every inventory host of the run (addresses). earlier: results with facts from the
        runs a resume continues, for hosts this run did not work on; one whose link now points
        at a host this run worked on and whose findings change is recorded in this run and
        appended to the returned list (resume relinks the clients of the servers it completes).
        """
        seen = Counter(address_of(h) for h in hosts)
        # An address shared by several inventory hosts (a lab, NAT) cannot identify one of them.
        addresses = {h.name: a for h in hosts if (a := address_of(h)) and seen[a] == 1}
        mine = {r.host for r in results}
        older = [r for r in earlier if r.host not in mine and r.facts and r.findings]
        linked = engine.link({r.host: r for r in [*older, *results] if r.facts and r.findings}, addresses)
        out: list[HostResult] = []
        for old in results:
            new = linked.get(old.host, old)
            if new.findings != old.findings:
                new = self._relinked(old, new, counted=True)
            out.append(new)
        for old in older:
            new = linked.get(old.host, old)
            to_mine = any(f.linked_host in mine for f in new.findings)
            if to_mine and [f.status for f in new.findings] != [f.status for f in old.findings]:
                out.append(self._relinked(old, new, counted=False))
        return out

    def _relinked(self, old: HostResult, new: HostResult, *, counted: bool) -> HostResult:
        new = old.with_findings(new.findings, ended=old.ended)
        # A check's relinked rows are final rows of a check like `_record`'s, deferred for the same
        # reason (cost, issue 19: ~90 single-row transactions a 1000-host check, one fsync each).
        self.store.record_host(self.info.id, new, phase="final", defer=self.info.kind == "check")
        report = getattr(self.progress, "host_relinked", None)
        if report is not None and (new.status is not old.status or not counted):  # a note alone is not news
            report(new, old.status if counted else None)
        return new

    def finish(self, results: list[HostResult], plan: PlanDocument | None = None) -> RunOutcome:
        """End the run (`interrupted` after a stop request, else `completed`) and return it."""
        if self.control.stopped:
            self.store.end_run(self.info.id, "interrupted", self.control.reason)
        else:
            self.store.end_run(self.info.id, "completed")
        return RunOutcome(self.store.run_info(self.info.id), results, plan)

