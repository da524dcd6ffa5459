"""The PostgreSQL audit store when its connection is lost (kbfix/store/reconnect.py): the server
ends the store's session (`pg_terminate_backend`, what a restart or failover does to it) while
it is idle, inside a write, or for longer than the store waits. Nothing is stored twice or half,
the hash chain stays whole, and no row the caller still holds is lost."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from kbfix.runinfo import RunInfo
from kbfix.store import AuditStore, StoreError
from kbfix.store import tables as t
from playbooks.model import Finding, HostResult, Status
from tests.pgdb import _admin, fresh_database


def _run(run_id: str) -> RunInfo:
    return RunInfo(id=run_id, kind="check", started=datetime.now(timezone.utc), operator="ops", kbfix_version="0")  # type: ignore[arg-type]


def _end_store_sessions(url: str) -> int:
    """Terminate every session of the store's database (the server side of a restart); how many."""
    name = sa.make_url(url).database
    with _admin() as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)


@contextmanager
def _refusing(url: str) -> Iterator[None]:
    """The database takes no new connections inside the block (as while a server restarts)."""
    name = sa.make_url(url).database
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        yield
    finally:
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _result(host: str) -> HostResult:
    return HostResult(host=host, status=Status.NON_COMPLIANT,
                      findings=[Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason="unpatched")])


def test_a_session_ended_while_idle_is_reopened_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with fresh_database() as url, AuditStore(url) as store:
        store.begin_run(_run("r1"))
        store.record_host("r1", _result("WSUS-01"), phase="final")
        store.record_host("r1", _result("WSUS-02"), phase="final", defer=True)  # a check's deferred row
        assert _end_store_sessions(url) == 1
        with caplog.at_level(logging.WARNING, logger="kbfix.store.audit"):
            store.record_host("r1", _result("WSUS-03"), phase="final")  # flushes WSUS-02 first
            store.note("r1", "after the restart")
        assert "connection to the audit store was lost" in caplog.text
        assert [r.host for r in store.host_results("r1")] == ["WSUS-01", "WSUS-02", "WSUS-03"]
        # every host's finding points at its own host_results row
        linked = store._query("SELECT r.host, f.host AS fhost FROM findings f JOIN host_results r "
                              "ON r.seq = f.host_result_seq WHERE r.run_id = 'r1' ORDER BY r.seq")
        assert [(x["host"], x["fhost"]) for x in linked] == [(h, h) for h in ("WSUS-01", "WSUS-02", "WSUS-03")]
        report = store.verify_chain()
        assert report.ok, report.broken


def test_a_session_ended_inside_a_write_stores_nothing_of_it_and_the_next_write_reconnects() -> None:
    with fresh_database() as url, AuditStore(url) as store:
        store.begin_run(_run("r1"))
        with pytest.raises(StoreError, match=r"lost in a write .*rolled it back, nothing of it was stored"), \
                store._tx() as tx:
            tx.execute(t.run_events.insert(), dict(run_id="r1", at="2026-11-28T00:00:00", state="note", detail="half"))
            _end_store_sessions(url)
            tx.execute(t.run_events.insert(), dict(run_id="r1", at="2026-11-28T00:00:01", state="note", detail="other half"))
        store.note("r1", "whole")
        details = [e["detail"] for e in store.events("r1")]
        assert "whole" in details and "half" not in details and "other half" not in details
        report = store.verify_chain()
        assert report.ok, report.broken


def test_deferred_rows_survive_a_server_that_is_back_too_late_and_are_written_once_it_is() -> None:
    with fresh_database() as url, AuditStore(url) as store:
        store.reconnect_s = 1.0
        store.begin_run(_run("r1"))
        store.record_host("r1", _result("WSUS-01"), phase="final", defer=True)
        with _refusing(url):
            _end_store_sessions(url)
            with pytest.raises(StoreError, match=r"no new one was taken within 1 s"):
                store.flush()
        store.flush()  # the server is back: the rows kept for the failed flush are written now
        assert [r.host for r in store.host_results("r1")] == ["WSUS-01"]
        report = store.verify_chain()
        assert report.ok, report.broken


def test_a_read_only_store_reopens_read_only() -> None:
    with fresh_database() as url:
        with AuditStore(url) as store:
            store.begin_run(_run("r1"))
        with AuditStore(url, readonly=True) as ro:
            _end_store_sessions(url)
            assert [r.id for r in ro.list_runs()] == ["r1"]  # the read is asked again on a new session
            with pytest.raises(StoreError, match="read-only"):  # and that session is read-only too
                ro._query("INSERT INTO host_locks VALUES ('h', 'r', 1, 'm', 'a', NULL)")
