"""The audit store on PostgreSQL (issue 18, `--state postgresql://…`): schema through Alembic,
append-only triggers, a newer store refused, two controllers (processes) contending for one host,
concurrent writers keeping one hash chain, read-only opens, no password in any message, and
`kbfix check` / `history` / `show` end to end against the lab. Each test has its own database
(tests/pgdb.py: a missing server fails these tests unless KBFIX_TEST_PG=skip)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from kbfix.runinfo import RunInfo
from kbfix.store import SCHEMA_VERSION, AuditStore, StoreError
from kbfix.store.engine import HEAD_REVISION
from kbfix.store.tables import APPEND_ONLY
from tests.pgdb import fresh_database, raw
from winlab.fixtures import demo_site
from winlab.lab import Lab

REPO = Path(__file__).resolve().parents[1]
KBFIX = Path(sys.executable).with_name("kbfix")


def _run(run_id: str, kind: str = "check") -> RunInfo:
    return RunInfo(id=run_id, kind=kind, started=datetime.now(timezone.utc), operator="ops", kbfix_version="0")  # type: ignore[arg-type]


def test_empty_database_gets_the_schema_and_reopens() -> None:
    from alembic.script import ScriptDirectory

    import kbfix.store.engine as engine

    assert ScriptDirectory(str(Path(engine.__file__).with_name("migrations"))).get_current_head() == HEAD_REVISION
    with fresh_database() as url:
        AuditStore(url).close()
        with raw(url) as db:
            assert db.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD_REVISION
            assert db.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() == SCHEMA_VERSION
            tables = set(sa.inspect(db).get_table_names())
        assert {"runs", "run_events", "host_results", "facts", "findings", "planned_actions", "intents", "results",
                "host_locks", "plan_documents", "reports", "chain", "schema_version"} <= tables
        with AuditStore(url) as store:  # second open: nothing to migrate
            assert store.list_runs() == []


def test_newer_schema_and_unknown_revision_are_refused() -> None:
    with fresh_database() as url:
        AuditStore(url).close()
        with raw(url) as db:
            db.exec_driver_sql(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1}, 'future')")  # noqa: S608
        with pytest.raises(StoreError, match="newer"):
            AuditStore(url)
        with pytest.raises(StoreError, match="newer"):
            AuditStore(url, readonly=True)
    with fresh_database() as url:
        AuditStore(url).close()
        with raw(url) as db:
            db.exec_driver_sql("UPDATE alembic_version SET version_num='9999_from_the_future'")
        with pytest.raises(StoreError, match="newer"):
            AuditStore(url)


def test_append_only_triggers_refuse_update_delete_and_truncate() -> None:
    with fresh_database() as url:
        with AuditStore(url) as store:
            store.begin_run(_run("r1", "apply"))
            store.note("r1", "hello")
        with raw(url) as db:
            for table in APPEND_ONLY:
                rows = db.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar()  # noqa: S608
                # row triggers fire for rows: UPDATE/DELETE where the run left some; TRUNCATE everywhere
                verbs = [f"UPDATE {table} SET run_id = run_id" if table != "chain" else "UPDATE chain SET at = at",  # noqa: S608
                         f"DELETE FROM {table}"] if rows else []  # noqa: S608
                if table == "runs":
                    verbs[0] = "UPDATE runs SET kind='x'"
                for sql in [*verbs, f"TRUNCATE {table} CASCADE"]:
                    with pytest.raises(sa.exc.DBAPIError, match=f"audit table {table} is append-only") as err:
                        db.exec_driver_sql(sql)
                    assert isinstance(err.value.orig, psycopg.Error)
            assert db.exec_driver_sql("SELECT COUNT(*) FROM run_events").scalar() == 2


# Two controllers on (as if) two machines: each process waits for the same instant, then tries to
# lock the same host; the winner holds it while the loser reports. Its machine name is its own
# (socket.gethostname patched), so liveness cannot be checked and only the lease protects the lock.
_CONTENDER = textwrap.dedent(
    """
    import socket, sys, time
    socket.gethostname = lambda: "controller-" + sys.argv[2]
    from kbfix.store import AuditStore, HostLockedError
    url, me, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    with AuditStore(url) as store:
        for r in range(rounds):
            time.sleep(max(0.0, start + r * 1.0 - time.time()))
            try:
                store.lock_hosts("run-" + me, ["host%d" % r])
                print(r, "won", flush=True)
            except HostLockedError as exc:
                print(r, "lost", exc.holder.run_id, flush=True)
    """
)


def test_two_controllers_contend_for_one_host_and_exactly_one_wins() -> None:
    rounds = 6
    with fresh_database() as url:
        AuditStore(url).close()
        start = time.time() + 4.0  # both imported and connected by then
        procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, url, name, str(start), str(rounds)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        lines = {name: dict(line.split(" ", 1) for line in out.splitlines()) for name, (out, _) in zip("ab", outs, strict=True)}
        for r in map(str, range(rounds)):
            results = sorted((lines["a"][r], lines["b"][r]))
            assert results[1] == "won" and results[0].startswith("lost run-"), (r, results)
        with AuditStore(url) as store:
            for r in range(rounds):
                holder = store.lock_holder(f"host{r}")
                loser = "a" if lines["a"][str(r)] != "won" else "b"
                assert holder is not None and holder.run_id != f"run-{loser}"
                assert lines[loser][str(r)] == f"lost {holder.run_id}"


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from kbfix.runinfo import RunInfo
    from kbfix.store import AuditStore
    url, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with AuditStore(url) as store:
        store.begin_run(RunInfo(id="run-" + me, kind="check", started=datetime.now(timezone.utc), operator=me,
                                kbfix_version="0"))
        for i in range(n):
            store.note("run-" + me, "note %d" % i)
    """
)


def test_concurrent_writers_keep_one_intact_chain() -> None:
    """Three controllers opening an empty database and writing at once: the schema is created once,
    every row is chained once, in one order (the writer lock)."""
    n = 150
    with fresh_database() as url:
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, name, str(n)], cwd=REPO,
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b", "c")]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errs
        with AuditStore(url, readonly=True) as store:
            rep = store.verify_chain()
            assert rep.ok, rep.broken
            assert rep.entries == 3 * (1 + 1 + n)  # per writer: its run row, running event, n notes


def test_read_only_open_reads_and_refuses_writes() -> None:
    with fresh_database() as url:
        with pytest.raises(StoreError, match="no audit store here yet"):
            AuditStore(url, readonly=True)
        with AuditStore(url) as store:
            store.begin_run(_run("r1"))
        with AuditStore(url, readonly=True) as ro:
            assert [r.id for r in ro.list_runs()] == ["r1"]
            with pytest.raises(StoreError, match="read-only"):
                ro.note("r1", "x")
            with pytest.raises(StoreError, match="read-only"):  # the session itself refuses too
                ro._query("INSERT INTO host_locks VALUES ('h', 'r', 1, 'm', 'a', NULL)")


def test_the_url_password_appears_in_no_message() -> None:
    secret = "s3cr3t-Pw"
    for url in (f"postgresql://postgres:{secret}@127.0.0.1:1/kbfix_none",  # nothing listens on port 1
                f"postgresql://nobody:{secret}@127.0.0.1:5432/kbfix_no_such_db"):
        for readonly in (False, True):
            with pytest.raises(StoreError) as err:
                AuditStore(url, readonly=readonly)
            assert secret not in str(err.value) and "***" in str(err.value), str(err.value)
    out = subprocess.run([str(KBFIX), "--state", f"postgresql://postgres:{secret}@127.0.0.1:1/x", "history"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and secret not in out.stderr + out.stdout and "cannot open" in out.stderr, out.stderr


def test_check_history_show_through_a_state_url_against_the_lab(tmp_path: Path) -> None:
    """`kbfix check` by two operators (one with KBFIX_STATE, one with --state) into one database;
    `history` and `show` read both runs; `audit verify` finds the chain intact."""
    with fresh_database() as url, Lab(demo_site()) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        env = {**os.environ, "KBFIX_STATE": url, "HOME": str(tmp_path / "home1")}
        first = subprocess.run([str(KBFIX), "-q", "-i", str(inv), "check", "--operator", "alice"], env=env,
                               capture_output=True, text=True, timeout=300, check=False)
        assert first.returncode in (0, 3, 4), first.stderr
        second = subprocess.run([str(KBFIX), "-q", "-i", str(inv), "--state", url, "--limit", "WSUS-SP1",
                                 "check", "--operator", "bob"], env={**os.environ, "HOME": str(tmp_path / "home2")},
                                capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode in (0, 3, 4), second.stderr
        hist = subprocess.run([str(KBFIX), "--state", url, "history"], capture_output=True, text=True, timeout=60,
                              check=False)
        assert hist.returncode == 0, hist.stderr
        assert "alice" in hist.stdout and "bob" in hist.stdout
        with AuditStore(url, readonly=True) as store:
            runs = store.list_runs()
            assert [r.operator for r in runs] == ["bob", "alice"]
            assert len(store.host_results(runs[1].id)) == len(lab.hosts) and len(store.host_results(runs[0].id)) == 1
        show = subprocess.run([str(KBFIX), "--state", url, "show", runs[1].id], capture_output=True, text=True,
                              timeout=60, check=False)
        assert show.returncode in (0, 3, 4) and "WSUS-SP1" in show.stdout, show.stderr
        verify = subprocess.run([str(KBFIX), "--state", url, "audit", "verify"], capture_output=True, text=True,
                                timeout=60, check=False)
        assert verify.returncode == 0 and "chain intact" in verify.stdout, verify.stdout + verify.stderr
        assert not (tmp_path / "home1" / "audit.sqlite3").exists()


def test_a_nul_in_host_text_is_stored_not_fatal() -> None:
    """PostgreSQL text cannot hold NUL (SQLite's can): a hostile answer's NUL becomes U+FFFD, the write goes through."""
    from playbooks.model import Finding, HostResult, Status

    with fresh_database() as url, AuditStore(url) as store:
        store.begin_run(_run("r1"))
        bad = Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason="dll\x00version")
        store.record_host("r1", HostResult.from_findings("h1", [bad]), facts={"k": "v\x00w"})
        assert store.facts("r1", "h1")[0]["facts"] == {"k": "v\x00w"}  # JSON keeps it exactly
        assert store.host_results("r1")[0].findings[0].reason == "dll\x00version"
        with raw(url) as db:
            assert db.exec_driver_sql("SELECT reason FROM findings").scalar() == "dll\ufffdversion"
        assert store.verify_chain().ok


def test_an_operator_with_only_select_reads_history_show_and_report(tmp_path: Path) -> None:
    """Across operators: a role that may only SELECT (an auditor) reads the shared store; reading
    never writes (history, show, report open it read-only)."""
    role = f"kbfix_reader_{os.getpid()}"
    with fresh_database() as url:
        with AuditStore(url) as store:
            store.begin_run(_run("20261127T100000Z-0000aaaa"))
            store.end_run("20261127T100000Z-0000aaaa", "completed")
        with raw(url) as db:
            db.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            db.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        reader = sa.make_url(url).set(username=role).render_as_string(False)
        try:
            for args in (["history"], ["show", "latest"], ["report", "latest", "--format", "csv"], ["audit", "verify"]):
                out = subprocess.run([str(KBFIX), "--state", reader, *args], capture_output=True, text=True,
                                     timeout=60, check=False, cwd=tmp_path)
                assert out.returncode in (0, 3, 4) and "error" not in out.stderr, (args, out.stderr)
            assert "20261127T100000Z" in subprocess.run([str(KBFIX), "history", "--state", reader], capture_output=True,
                                                        text=True, timeout=60, check=False).stdout
            with pytest.raises(StoreError, match="permission denied"):  # and it cannot write
                AuditStore(reader).note("20261127T100000Z-0000aaaa", "x")
        finally:
            with raw(url) as db:
                db.exec_driver_sql(f'DROP OWNED BY "{role}"')
                db.exec_driver_sql(f'DROP ROLE "{role}"')
