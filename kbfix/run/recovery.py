"""What earlier runs tell about a host's actions, read from the audit store after a crash or
for `apply --resume`: which actions already succeeded, and which may have run (an intent
without a result, now closed as `unknown`). Such actions are never re-run automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kbfix.store import AuditStore, OpenIntent
from playbooks.model import Evidence, ExecutedAction, Finding, HostResult, Outcome, Status, utc_now

ActionKey = tuple[str, str | None]
"""`PlannedAction.key`: the action id and the package SHA-256."""


@dataclass(frozen=True)
class Recovery:
    """Per host, the keys of actions that succeeded and of actions whose outcome is unknown in
    `runs` (the runs read, newest first), and the advisories those actions were for
    (`attempted`: host → advisories with an intent journalled in `runs`)."""

    runs: list[str]
    succeeded: dict[str, set[ActionKey]] = field(default_factory=dict)
    unknown: dict[str, set[ActionKey]] = field(default_factory=dict)
    attempted: dict[str, set[str]] = field(default_factory=dict)

    def concerns(self, host: str) -> bool:
        """True when an earlier run left something to say about this host's actions."""
        return host in self.unknown or host in self.succeeded

    def filter(self, host: str, findings: Sequence[Finding]) -> list[Finding]:
        """Drop planned actions that already succeeded (or may have run); the finding then says
        why nothing was re-run and is `failed` (succeeded, yet not fixed) or `unknown`.

        A finding the fresh re-read shows `compliant` for an advisory whose action was journalled
        in `runs` becomes `remediated`: the host was fixed by that interrupted change, not found
        fine (its evidence says the outcome was confirmed by re-reading after the interruption).
        """
        done = self.succeeded.get(host, set())
        maybe = self.unknown.get(host, set()) - done
        attempted = self.attempted.get(host, set())
        out: list[Finding] = []
        for f in findings:
            if f.status is Status.COMPLIANT and f.advisory in attempted:
                out.append(self._confirmed(f))
                continue
            keep = [p for p in f.planned if p.key not in done and p.key not in maybe]
            dropped = [p for p in f.planned if p not in keep]
            if not dropped:
                out.append(f)
                continue
            notes = []
            if any(p.key in done for p in dropped):
                notes.append("already succeeded in run(s) " + ", ".join(self.runs)
                             + ", yet the host still is not fixed: not re-run")
            if any(p.key in maybe for p in dropped):
                notes.append("an earlier attempt's outcome is unknown and the host still is not fixed: not re-run "
                             "automatically; check the host (installer may still be running), then apply again")
            status = Status.UNKNOWN if any(p.key in maybe for p in dropped) else Status.FAILED
            out.append(f.model_copy(update={"planned": keep, "status": status if not keep else f.status,
                                            "reason": f"{f.reason}; " + "; ".join(notes)}))
        return out


    def _confirmed(self, f: Finding) -> Finding:
        runs = ", ".join(self.runs)
        note = (f"an action for {f.advisory} was journalled in interrupted run(s) {runs}; its outcome was "
                "confirmed by re-reading the host after the interruption: fixed")
        return f.model_copy(update={
            "status": Status.REMEDIATED,
            "reason": f"Remediated by run(s) {runs} (confirmed by re-reading after the interruption); {f.reason}",
            "evidence": [*f.evidence, Evidence(probe=f"audit journal {runs}", value="intent recorded",
                                               rule="recovery.confirmed_after_interruption", note=note)],
            "notes": [*f.notes, note],
        })


def close_open_intents(store: AuditStore, opens: Sequence[OpenIntent], new_run: str) -> dict[str, set[ActionKey]]:
    """Close dangling intents as `unknown` (append-only: a result row, so the old run is
    consistent) and the runs they belong to as interrupted; returns host → action keys."""
    for rid in sorted({oi.run_id for oi in opens}):
        if store.run_info(rid).state == "running":
            # Started but never closed: the process was killed (live runs are never passed here).
            store.end_run(rid, "interrupted", f"the kbfix process ended without closing this run; re-read by {new_run}")
    unknown: dict[str, set[ActionKey]] = {}
    for oi in opens:
        store.record_result(oi.run_id, oi.host, oi.action.id, ExecutedAction(
            action_id=oi.action.id, outcome=Outcome.UNKNOWN, started=oi.at, ended=utc_now(),
            detail=f"kbfix stopped before the answer was recorded; host state re-read by run {new_run}"))
        unknown.setdefault(oi.host, set()).add(oi.action.key)
    return unknown


def recover_chain(store: AuditStore, run_id: str, new_run: str) -> Recovery:
    """For `apply --resume RUN`: the chain of runs RUN resumed (itself first), each marked
    interrupted if it never ended, its open intents closed as `unknown`."""
    chain = store.resume_chain(run_id)
    for rid in chain:
        if store.run_info(rid).state == "running":
            store.end_run(rid, "interrupted", f"the kbfix process ended without closing this run; resumed by {new_run}")
    opens = store.open_intents(chain)
    unknown = close_open_intents(store, opens, new_run)
    succeeded: dict[str, set[ActionKey]] = {}
    attempted: dict[str, set[str]] = {}
    for oi in opens:
        attempted.setdefault(oi.host, set()).add(oi.action.advisory)
    for o in store.outcomes(chain):
        if o.executed.outcome.done:
            succeeded.setdefault(o.host, set()).add(o.action.key)
            attempted.setdefault(o.host, set()).add(o.action.advisory)
    return Recovery(chain, succeeded, unknown, attempted)


def recover_crashed(store: AuditStore, hosts: Sequence[str], new_run: str) -> Recovery:
    """For a new apply: intents left open on these hosts by earlier runs that are no longer
    alive (a run still alive holds its hosts' locks, so its hosts are skipped as locked)."""
    opens = [oi for oi in store.open_intents_for_hosts(hosts) if not store.run_is_live(oi.run_id)]
    unknown = close_open_intents(store, opens, new_run)
    return Recovery(sorted({oi.run_id for oi in opens}), {}, unknown)


def unfinished_hosts(store: AuditStore, recovery: Recovery) -> set[str]:
    """The hosts the resumed runs had planned work for and did not end compliant, remediated,
    mitigated or not applicable (a later run's verdict wins)."""
    planned = store.planned_hosts(recovery.runs)
    latest = store.latest_statuses(recovery.runs)
    done = (Status.REMEDIATED, Status.COMPLIANT, Status.NOT_APPLICABLE, Status.MITIGATED)
    return {h for h in planned if latest.get(h) not in done}


def earlier_results(store: AuditStore, runs: Sequence[str], hosts: Sequence[str]) -> list[HostResult]:
    """For `apply --resume`: each of `hosts`' latest `final` result in `runs` (newest first, as
    `Recovery.runs`), with the facts last stored for it in that run, so the resume can relink a
    WSUS client to the server it completes. Hosts without a result or without facts there (never
    started) are left out. Read-only."""
    wanted = set(hosts)
    out: dict[str, HostResult] = {}
    for rid in runs:
        for r in store.host_results(rid):
            if r.host not in wanted or r.host in out:
                continue
            facts = store.facts(rid, r.host)
            if facts and isinstance(facts[-1]["facts"], dict):
                out[r.host] = r.model_copy(update={"facts": facts[-1]["facts"]})
    return [out[h] for h in hosts if h in out]
