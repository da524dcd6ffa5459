"""Audit store: migrations from empty, append-only tables, journal, resume queries, host locks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from kbfix.runinfo import RunInfo
from kbfix.store import SCHEMA_VERSION, AuditStore, HostLockedError, StoreError, new_run_id
from kbfix.store.schema import current_version
from playbooks.model import (
    Evidence,
    ExecutedAction,
    Finding,
    HostResult,
    PlannedAction,
    Status,
)
from tests.pgdb import ENGINES, raw, store_location

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=ENGINES)
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`--state` of each engine: an SQLite state directory, a fresh PostgreSQL database's URL."""
    with store_location(request.param, tmp_path) as where:
        yield where


def _run(kind: str = "apply", **options: object) -> RunInfo:
    return RunInfo(
        id=new_run_id(),
        kind=kind,  # type: ignore[arg-type]
        started=datetime.now(timezone.utc),
        operator="tester",
        kbfix_version="0.1.0",
        options=dict(options),
    )


def _action(aid: str = "a1") -> PlannedAction:
    return PlannedAction(id=aid, advisory="KB954960", kind="install_package", description="install",
                         estimated_seconds=3.0, expected_exit_codes=[0, 3010])


def _result(host: str, status: Status = Status.NON_COMPLIANT) -> HostResult:
    f = Finding(advisory="KB954960", status=status, reason="old dll",
                evidence=[Evidence(probe="file.info C:\\x.dll", value="3.1.6001.65", rule="dll-version")])
    return HostResult.from_findings(host, [f], facts_digest="abc")


def test_migrates_empty_store_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s" / "audit.sqlite3"
    AuditStore(path).close()
    db = sqlite3.connect(path)
    assert current_version(db) == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "run_events", "host_results", "facts", "findings", "planned_actions", "intents",
            "results", "host_locks", "schema_version"} <= tables
    db.close()
    with AuditStore(path) as store:  # second open: nothing to migrate, no error
        assert store.list_runs() == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    AuditStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'future')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        AuditStore(path)


def test_run_lifecycle_results_and_redaction(store_at: str) -> None:
    with AuditStore.in_dir(store_at) as store:
        info = _run(password="hunter2", forks=5)
        store.begin_run(info)
        assert store.run_info(info.id).state == "running"
        store.record_host(info.id, _result("wsus01"), phase="assess", facts={"dll": "3.1.6001.65", "token": "x"})
        store.record_host(info.id, _result("wsus01", Status.REMEDIATED), phase="final")
        store.end_run(info.id, "interrupted", "SIGINT")
        got = store.run_info(info.id)
        assert got.state == "interrupted" and got.ended is not None
        assert got.options == {"password": "***redacted***", "forks": 5}
        [final] = store.host_results(info.id)
        assert final.status is Status.REMEDIATED
        assert store.host_results(info.id, phase="assess")[0].findings[0].evidence[0].value == "3.1.6001.65"
        assert store.facts(info.id, "wsus01")[0]["facts"] == {"dll": "3.1.6001.65", "token": "***redacted***"}
        assert store.resolve_run("latest") == info.id
        assert store.resolve_run(info.id[:12]) == info.id
        with pytest.raises(StoreError):
            store.resolve_run("nope")
    if store.dialect == "sqlite":
        stored = b"".join(p.read_bytes() for p in Path(store_at).glob("audit.sqlite3*"))
    else:
        with raw(store_at) as db:
            stored = "".join(str(r) for t in ("runs", "facts") for r in db.execute(sa.text(f"SELECT * FROM {t}"))).encode()  # noqa: S608
        assert b"forks" in stored
    assert b"hunter2" not in stored


def test_audit_tables_are_append_only(tmp_path: Path) -> None:
    with AuditStore.in_dir(tmp_path) as store:
        info = _run()
        store.begin_run(info)
        store.record_intent(info.id, "h1", _action())
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    for sql in ("UPDATE intents SET host='x'", "DELETE FROM intents", "UPDATE runs SET kind='check'",
                "DELETE FROM run_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()


def test_journal_intents_without_results(store_at: str) -> None:
    with AuditStore.in_dir(store_at) as store:
        info = _run()
        store.begin_run(info)
        journal = store.journal(info.id)
        a1, a2 = _action("a1"), _action("a2")
        now = datetime.now(timezone.utc)
        journal.intent("h1", a1)
        journal.result("h1", a1, ExecutedAction(action_id="a1", outcome="success", exit_code=0, started=now))
        journal.intent("h2", a2)  # the process "dies" here
        [open_] = store.open_intents(info.id)
        assert (open_.host, open_.action.id) == ("h2", "a2")
        [done] = store.outcomes(info.id)
        assert (done.host, done.executed.outcome, done.executed.exit_code) == ("h1", "success", 0)
        with pytest.raises(StoreError, match="without an open intent"):
            store.record_result(info.id, "h1", "a1", ExecutedAction(action_id="a1", outcome="success", started=now))
        rows = store.intents(info.id)
        assert [(r["host"], r["outcome"]) for r in rows] == [("h1", "success"), ("h2", None)]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from kbfix.store import AuditStore
    store = AuditStore.in_dir(sys.argv[1])
    store.lock_hosts("run-holder", ["wsus01", "sccm01"])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_contention_names_holder_and_stale_lock_is_reclaimed(store_at: str) -> None:
    AuditStore.in_dir(store_at).close()
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, store_at], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with AuditStore.in_dir(store_at) as store:
            with pytest.raises(HostLockedError) as err:
                store.lock_hosts("run-second", ["sccm01"])
            assert err.value.holder.pid == proc.pid
            assert "run-holder" in str(err.value) and f"pid {proc.pid}" in str(err.value)
            store.lock_hosts("run-second", ["other01"])  # unrelated host: fine
            proc.kill()
            proc.wait(timeout=10)
            deadline = time.monotonic() + 5
            while True:  # the pid is gone once reaped: the lock is stale and reclaimed
                try:
                    store.lock_hosts("run-second", ["sccm01", "wsus01"])
                    break
                except HostLockedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert store.lock_holder("wsus01").run_id == "run-second"  # type: ignore[union-attr]
            store.unlock_hosts("run-second")
            assert store.lock_holder("wsus01") is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_one_host_cannot_pass_its_store_budget_in_a_run(store_at: str) -> None:
    """Issue 20 finding 6: past `host_run_budget` bytes the facts become a note; the verdict stays."""
    from datetime import datetime, timezone

    from kbfix.runinfo import RunInfo
    from playbooks.model import HostResult, Status

    with AuditStore.in_dir(store_at) as store:
        store.host_run_budget = 1_000_000
        store.begin_run(RunInfo(id="r1", kind="check", started=datetime.now(timezone.utc), operator="o",
                                kbfix_version="0"))
        facts = {f"v{i}": "x" * 20_000 for i in range(200)}  # 4 MB raw, 1.6 MB after the 8 KiB cut
        result = HostResult(host="h1", status=Status.COMPLIANT)
        store.record_host("r1", result, phase="assess", facts=facts)
        stored = store.facts("r1", "h1")[0]["facts"]
        assert list(stored) == ["_not_stored"] and "budget" in stored["_not_stored"]
        assert store.host_results("r1", phase="assess")[0].status is Status.COMPLIANT
        small = {"v": "y" * 20_000}
        store.record_host("r1", result.model_copy(update={"host": "h2"}), phase="assess", facts=small)
        assert store.facts("r1", "h2")[0]["facts"]["v"].endswith("[11808 more characters not stored]")


def test_a_v4_store_from_before_alembic_is_stamped_not_rebuilt(tmp_path: Path) -> None:
    """A store written by a kbfix with the hand-written migrations only (v4, no alembic_version):
    opened, it is stamped with the baseline revision, its rows and chain kept."""
    from kbfix.store.engine import HEAD_REVISION
    from kbfix.store.schema import migrate

    path = tmp_path / "audit.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db)
    db.execute("INSERT INTO runs(id, kind, started, operator, kbfix_version, options) VALUES "
               "('old-run', 'check', '2026-01-01T00:00:00+00:00', 'ops', '0.0.9', '{}')")
    db.close()
    with AuditStore(path) as store:
        assert [r.id for r in store.list_runs()] == ["old-run"]
        store.note("old-run", "after the upgrade")
        chain = store.verify_chain()  # the row written before and the note, chained at the first write
        assert chain.ok and chain.entries == 2
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
