"""A host's past remedies, read from the audit store, as the playbooks' `HostHistory`.

The KB954960 RTM workaround leaves no readable mark on the host (IUpdate.Decline removes every
approval), so whether it was done is the store's knowledge: a `wsus_workaround` action whose
result was `success` on that host (playbooks/history.py). `StoreHistory(store)(host)` answers
that from the newest `RUNS_LOOKED_AT` runs; `use_store_history(engine, store)` hands it to an
engine that accepts one (`PlaybookEngine.history_for`), so every assess of a run sees it.
"""

from __future__ import annotations

from typing import Any

from kbfix.store.audit import AuditStore
from playbooks.history import HostHistory

RUNS_LOOKED_AT = 500  # newest runs searched for a host's past results: years of weekly runs


class StoreHistory:
    """Callable host name → HostHistory, from the store's result rows (newest RUNS_LOOKED_AT runs).
    Reads only; raises StoreError when the database cannot be read."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def __call__(self, host: str) -> HostHistory:
        rows = self.store.recent_outcomes(host, RUNS_LOOKED_AT)
        if not rows:
            return HostHistory()
        return HostHistory.from_events((o.action.kind, o.executed.outcome, o.executed.ended or o.executed.started)
                                       for o in rows)


def use_store_history(engine: Any, store: AuditStore) -> None:
    """Give `engine` the store's history when it takes one (an attribute `history_for`); engines
    without it (test doubles) are left alone."""
    if hasattr(engine, "history_for"):
        engine.history_for = StoreHistory(store)
