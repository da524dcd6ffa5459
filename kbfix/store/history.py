"""A host's past remedies, read from the audit store, as the playbooks' `HostHistory`.

The KB954960 RTM workaround leaves no readable mark on the host (IUpdate.Decline removes every
approval), so whether it was done is the store's knowledge: a `wsus_workaround` action whose
result was `success` on that host (playbooks/history.py). `StoreHistory(store)(host)` answers
that from the newest `RUNS_LOOKED_AT` runs; `use_store_history(engine, store, hosts)` hands it to an
engine that accepts one (`PlaybookEngine.history_for`), so every assess of a run sees it.

Prefetch (cost, issue 19: one query per host was ~0.3 ms of controller CPU per host): the run
reads the history of all its hosts at its start in a few queries (`StoreHistory.prefetch`). A
prefetched answer is used only while this store object has written no result row for that host
since (`AuditStore.result_writes`): an apply writes a host's results after that host's first
assess, and its verify (and anything later) then reads the store again, so it sees them; a crash
recovery closing a host's open intents at the run's start does the same. Results that another
kbfix process writes for the host during the run are not seen by the prefetch, as a per-host
read just before they were written would not have seen them: a run concurrent with another
run's changes on the same host reads whichever state it meets (an apply holds the host's lock;
a check or plan does not wait for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kbfix.store.audit import AuditStore
from kbfix.store.rows import ActionOutcome
from playbooks.history import HostHistory

RUNS_LOOKED_AT = 500  # newest runs searched for a host's past results: years of weekly runs


def _history(rows: Sequence[ActionOutcome]) -> HostHistory:
    if not rows:
        return HostHistory()
    return HostHistory.from_events((o.action.kind, o.executed.outcome, o.executed.ended or o.executed.started)
                                   for o in rows)


class StoreHistory:
    """Callable host name → HostHistory, from the store's result rows (newest RUNS_LOOKED_AT runs).
    Reads only; raises StoreError when the database cannot be read."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        # host -> (store.result_writes(host) when read, its history then)
        self._prefetched: dict[str, tuple[int, HostHistory]] = {}

    def prefetch(self, hosts: Iterable[str]) -> None:
        """Read the history of `hosts` now (a few queries for all of them); a later call for one of
        them answers from this read unless this store has written a result row of it since."""
        names = list(dict.fromkeys(hosts))
        if not names:
            return
        # The marks are taken BEFORE the read: a result written in between raises the host's mark
        # and so sends its next call to the database (never a stale answer).
        marks = {h: self.store.result_writes(h) for h in names}
        outcomes = self.store.recent_outcomes_by_host(names, RUNS_LOOKED_AT)
        for h in names:
            self._prefetched[h] = (marks[h], _history(outcomes.get(h, [])))

    def __call__(self, host: str) -> HostHistory:
        hit = self._prefetched.get(host)
        if hit is not None and hit[0] == self.store.result_writes(host):
            return hit[1]
        return _history(self.store.recent_outcomes(host, RUNS_LOOKED_AT))


def use_store_history(engine: Any, store: AuditStore, hosts: Iterable[str] = ()) -> None:
    """Give `engine` the store's history when it takes one (an attribute `history_for`); engines
    without it (test doubles) are left alone. `hosts`: the run's host names, whose history is
    read now in a few queries (`StoreHistory.prefetch`)."""
    if hasattr(engine, "history_for"):
        history = StoreHistory(store)
        history.prefetch(hosts)
        engine.history_for = history
