"""Deferred host rows (issue 19: a check's final rows written in groups): what is read, verified
and committed is the same as row by row, on SQLite and PostgreSQL; the group is written when
full, when old (`flush_due`), before any other write or read, and at close; a failed group stays
deferred; secrets never reach the store."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import kbfix.store.host_rows as host_rows
from kbfix.report.sample import fleet, run_info
from kbfix.store import AuditStore, StoreError, new_run_id
from remoting.redaction import REDACTED
from tests.pgdb import ENGINES, raw, store_location


def _rows(location: str) -> list[tuple[str, int]]:
    """(host, findings rows) per host_results row, by seq, read past kbfix."""
    with raw(location) as db:
        return [(r[0], int(r[1])) for r in db.exec_driver_sql(
            "SELECT h.host, (SELECT COUNT(*) FROM findings f WHERE f.host_result_seq = h.seq)"
            " FROM host_results h ORDER BY h.seq")]


@pytest.mark.parametrize("engine", ENGINES)
def test_deferred_rows_read_verify_and_link_like_rows_written_one_by_one(engine: str, tmp_path: Path) -> None:
    results = fleet(7, 3)
    with store_location(engine, tmp_path) as location:
        with AuditStore.in_dir(location) as store:
            info = run_info("check").model_copy(update={"id": new_run_id()})
            store.begin_run(info)
            for r in results:
                assert store.record_host(info.id, r, phase="final", facts={"dll": r.host, "password": "hunter2"},
                                         defer=True) is None
            # a read sees them: the rows are written first, in recording order
            got = store.host_results(info.id)
            assert sorted(r.host for r in got) == sorted(r.host for r in results)
            assert [f.status for r in got for f in r.findings] == [
                f.status for r in sorted(results, key=lambda x: x.host) for f in r.findings]
            assert store.facts(info.id, results[0].host)[0]["facts"] == {"dll": results[0].host, "password": REDACTED}
            store.end_run(info.id, "completed")
            assert store.verify_chain().ok
        location_rows = _rows(location)
    assert location_rows == [(r.host, 3) for r in results]  # each host's findings point at its own row


def test_a_full_group_is_written_and_an_old_one_on_flush_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_rows, "DEFER_MAX_HOSTS", 3)
    results = fleet(4, 1)
    location = str(tmp_path / "state")
    with AuditStore.in_dir(location) as store:
        info = run_info("check").model_copy(update={"id": new_run_id()})
        store.begin_run(info)
        for r in results[:3]:
            store.record_host(info.id, r, defer=True)
        assert len(_rows(location)) == 3  # the third filled the group
        store.record_host(info.id, results[3], defer=True)
        store.flush_due()
        assert len(_rows(location)) == 3  # not old yet
        monkeypatch.setattr(host_rows, "DEFER_MAX_AGE_S", 0.0)
        time.sleep(0.01)
        store.flush_due()
        assert len(_rows(location)) == 4


def test_close_writes_what_waits_and_a_later_write_keeps_the_order(tmp_path: Path) -> None:
    results = fleet(3, 1)
    location = str(tmp_path / "state")
    with AuditStore.in_dir(location) as store:
        info = run_info("check").model_copy(update={"id": new_run_id()})
        store.begin_run(info)
        store.record_host(info.id, results[0], defer=True)
        store.record_host(info.id, results[1])  # not deferred: the deferred row goes first
        store.record_host(info.id, results[2], defer=True)
        assert [h for h, _n in _rows(location)] == [results[0].host, results[1].host]
    assert [h for h, _n in _rows(location)] == [r.host for r in results]
    with AuditStore.in_dir(location) as store:
        assert store.verify_chain().ok


def test_a_group_that_cannot_be_written_stays_deferred(tmp_path: Path) -> None:
    results = fleet(2, 1)
    location = str(tmp_path / "state")
    store = AuditStore.in_dir(location)
    info = run_info("check").model_copy(update={"id": new_run_id()})
    store.begin_run(info)
    store.record_host(info.id, results[0], defer=True)
    # another process holds the write lock past the busy timeout: the flush fails, nothing is lost
    blocker = sqlite3.connect(tmp_path / "state" / "audit.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.exec_driver_sql("PRAGMA busy_timeout=50")
    with pytest.raises(StoreError):
        store.flush()
    blocker.execute("ROLLBACK")
    blocker.close()
    store.record_host(info.id, results[1], defer=True)
    store.close()
    assert [h for h, _n in _rows(location)] == [r.host for r in results]


def test_a_check_run_stores_its_final_rows_in_groups_and_all_of_them(tmp_path: Path) -> None:
    from kbfix.run import RunOptions, run_check
    from tests.test_run_runner import _setup

    hosts, engine = _setup(120)
    location = str(tmp_path / "state")
    with AuditStore.in_dir(location) as store:
        out = run_check(hosts, engine, store, RunOptions(forks=8))
        assert len(store.host_results(out.info.id)) == 120
        assert store.verify_chain().ok
    with raw(location) as db:
        # one chain append per transaction: its entries share one `at`
        commits = db.exec_driver_sql("SELECT COUNT(DISTINCT at) FROM chain WHERE tbl='host_results'").scalar()
        facts = db.exec_driver_sql("SELECT COUNT(*) FROM facts").scalar()
    assert facts == 120
    assert commits is not None and commits <= 120 // 2
