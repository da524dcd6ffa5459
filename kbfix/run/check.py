"""Read-only runs: `run_ping` (reach and authenticate) and `run_check` (gather, assess, store).

Per host: ONE session (one WinRM shell) opened in check mode, so remoting refuses any mutating
op; gather in one request; assess; store the result with its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kbfix.rollout import run_concurrently
from kbfix.run.options import RunControl, RunOptions, RunOutcome
from kbfix.run.protocols import Engine, HostLike, Progress, Session
from kbfix.run.results import address_of
from kbfix.run.schedule import RunSchedule
from kbfix.store import AuditStore
from kbfix.store.history import use_store_history
from playbooks.model import HostResult, utc_now

PingRow = tuple[str, str | None, dict[str, Any]]


def run_ping(hosts: Sequence[HostLike], engine: Engine, options: RunOptions) -> list[PingRow]:
    """Reach and authenticate each host: `(host, error text or None, agent host identity)`.
    Not stored (nothing about the host's compliance is learned)."""

    def work(h: HostLike) -> PingRow:
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


def gather(engine: Engine, session: Session, host: HostLike) -> HostResult:
    """Gather and assess one host over an open session: its HostResult with address and site."""
    started = utc_now()
    result = engine.assess(session, host)
    return result.model_copy(update={"address": address_of(host), "site": host.site, "started": started,
                                     "ended": utc_now()})


def assess_host(engine: Engine, store: AuditStore, run_id: str, host: HostLike, *, planning: bool) -> HostResult:
    """Open a check-mode session, gather, assess (and plan); when planning, store the `assess`
    row with its facts and the planned actions (a check's facts go with its `final` row:
    `RunSchedule.facts_in_final`). Raises remoting errors (the schedule makes them results)."""
    with engine.session(host, check_mode=True) as s:
        result = gather(engine, s, host)
    if not planning:
        return result
    result = engine.plan(host, result)
    store.record_host(run_id, result, phase="assess", facts=result.facts)
    if result.planned:
        store.record_plan(run_id, host.name, result.planned, result.facts_digest)
    return result


def run_check(
    hosts: Sequence[HostLike],
    engine: Engine,
    store: AuditStore,
    options: RunOptions,
    *,
    control: RunControl | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Read-only: gather, assess and store every host (sessions opened in check mode), then
    link WSUS clients to their servers."""
    run = RunSchedule("check", store, options, control, progress)
    run.facts_in_final = True
    # windows (issue 13 item 1): "workaround done" comes from the store (read for all hosts at once)
    use_store_history(engine, store, [h.name for h in hosts])
    results = run.rollout(hosts, lambda h: assess_host(engine, store, run.id, h, planning=False), link=engine)
    return run.finish(results)
