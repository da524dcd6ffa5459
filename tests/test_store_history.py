"""The store's host history read for a whole run at its start (`StoreHistory.prefetch`, issue 19):
the same answers as one query per host, on SQLite and PostgreSQL, over several query chunks; a
result this store writes for a host afterwards is seen by that host's next call (an apply's
verify), and a prefetched host costs no query."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import kbfix.store.journal as journal
from kbfix.runinfo import RunInfo
from kbfix.store import AuditStore
from kbfix.store.history import StoreHistory, use_store_history
from playbooks.history import HostHistory
from playbooks.model import ExecutedAction, PlannedAction
from tests.pgdb import ENGINES, store_location

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _run(store: AuditStore, n: int) -> str:
    run_id = f"20261123T12{n:04d}Z-0000abcd"
    store.begin_run(RunInfo(id=run_id, kind="apply", started=T0 + timedelta(minutes=n), operator="ops",
                            kbfix_version="0"))
    return run_id


def _act(store: AuditStore, run_id: str, host: str, kind: str, outcome: str, minute: int) -> None:
    aid = f"{kind}-{minute}"
    action = PlannedAction(id=aid, advisory="KB954960", kind=kind, description=kind)
    store.record_intent(run_id, host, action)
    at = T0 + timedelta(minutes=minute)
    store.record_result(run_id, host, aid, ExecutedAction(action_id=aid, outcome=outcome, started=at, ended=at))  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_prefetch_answers_as_one_query_per_host(engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "OUTCOME_HOSTS_PER_QUERY", 2)  # several chunks over five hosts
    with store_location(engine, tmp_path) as location, AuditStore.in_dir(location) as store:
        r1, r2 = _run(store, 1), _run(store, 2)
        _act(store, r1, "wsus1", "wsus_workaround", "success", 10)
        _act(store, r2, "wsus1", "wsus_workaround", "success", 20)  # the later one wins
        _act(store, r1, "wsus2", "wsus_workaround", "failed", 11)  # failed: not a past remedy
        _act(store, r2, "wsus3", "install_package", "success", 12)
        _act(store, r1, "wsus3", "wsus_workaround", "success", 13)
        names = ["wsus1", "wsus2", "wsus3", "never-seen", "wsus1", "client'4"]
        one_by_one = StoreHistory(store)
        expect = {h: one_by_one(h) for h in names}
        assert expect["wsus1"].last_success == {"wsus_workaround": T0 + timedelta(minutes=20)}
        assert expect["wsus2"] == expect["never-seen"] == HostHistory()
        assert set(expect["wsus3"].last_success) == {"install_package", "wsus_workaround"}
        prefetched = StoreHistory(store)
        prefetched.prefetch(names)

        def no_query(host: str, runs: int) -> None:
            raise AssertionError(f"{host}: queried after the prefetch")

        monkeypatch.setattr(store, "recent_outcomes", no_query)
        assert {h: prefetched(h) for h in names} == expect


@pytest.mark.parametrize("engine", ENGINES)
def test_a_result_written_after_the_prefetch_is_seen(engine: str, tmp_path: Path) -> None:
    with store_location(engine, tmp_path) as location, AuditStore.in_dir(location) as store:
        run_id = _run(store, 1)
        history = StoreHistory(store)
        history.prefetch(["wsus1", "wsus2"])
        assert history("wsus1") == HostHistory()
        # the run's own apply on wsus1: its verify asks again and must see the workaround
        _act(store, run_id, "wsus1", "wsus_workaround", "success", 30)
        assert history("wsus1").last_success == {"wsus_workaround": T0 + timedelta(minutes=30)}
        assert history("wsus2") == HostHistory()  # untouched host: still the prefetched answer
        assert history("not-prefetched") == HostHistory()


def test_use_store_history_prefetches_and_leaves_engines_without_history_alone(tmp_path: Path) -> None:
    class Engine:
        history_for = None

    class Double:
        pass

    with AuditStore.in_dir(tmp_path / "state") as store:
        _act(store, _run(store, 1), "wsus1", "wsus_workaround", "success", 5)
        engine, double = Engine(), Double()
        use_store_history(engine, store, ["wsus1"])
        use_store_history(double, store, ["wsus1"])
        assert not hasattr(double, "history_for")
        assert isinstance(engine.history_for, StoreHistory)
        assert engine.history_for._prefetched["wsus1"][1].last_success == {"wsus_workaround": T0 + timedelta(minutes=5)}
