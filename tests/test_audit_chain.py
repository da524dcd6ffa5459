"""Tamper evidence: the audit store's hash chain and the SHA-256 of every report written.

A one-byte edit of a stored row — made with SQL past the append-only triggers, or by flipping a
byte of the SQLite file itself — is found by `kbfix audit verify`, which names the row and exits 4;
a one-byte edit of a report file makes `kbfix audit verify FILE` say it is not a report kbfix wrote.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.report.record import document_for_run, identify, write_recorded
from kbfix.report.sample import ADVISORIES, hosts, run_info
from kbfix.runinfo import RunInfo
from kbfix.store import AuditStore
from kbfix.store.chain import CHAINED, GENESIS, link_hash, row_hash
from kbfix.store.chain import verify as chain_verify
from kbfix.store.engine import is_store_url
from kbfix.store.schema import MIGRATIONS
from tests.pgdb import ENGINES, drop_append_only, raw, store_location

runner = CliRunner()


@pytest.fixture(params=ENGINES)
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`--state` of each engine: an SQLite state directory, a fresh PostgreSQL database's URL."""
    with store_location(request.param, tmp_path) as where:
        yield where


def _fill(state: Path | str) -> str:
    info = run_info()
    with AuditStore.in_dir(state) as store:
        store.begin_run(info)
        for r in hosts():
            store.record_host(info.id, r)
        store.note(info.id, "a note")
        store.end_run(info.id, "completed")
    return info.id


def _verify(state: Path | str, *extra: str) -> tuple[int, str]:
    r = runner.invoke(app, ["--state", str(state), "audit", "verify", *extra])
    return r.exit_code, r.output


def test_intact_chain_verifies_and_covers_every_row(store_at: str) -> None:
    state = store_at
    _fill(state)
    with AuditStore.in_dir(state) as store, raw(state) as db:
        rep = store.verify_chain()
        rows = sum(db.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar() or 0 for t in CHAINED)  # noqa: S608
        # recompute the head by hand from the chain table: every entry links to the previous one
        prev = GENESIS
        for tbl, rid, rh, h in db.exec_driver_sql("SELECT tbl, row_id, row_hash, hash FROM chain ORDER BY seq"):
            assert h == link_hash(prev, tbl, rid, rh)
            prev = h
    assert rep.ok and rep.entries == rows > 10 and rep.head == prev
    code, out = _verify(state)
    assert code == 0 and "chain intact" in out and rep.head in out


def test_sql_edit_of_a_row_is_named(store_at: str) -> None:
    state = store_at
    _fill(state)
    with raw(state) as db:
        drop_append_only(db, "findings", "UPDATE")  # what someone editing the evidence has to do first
        seq = db.exec_driver_sql("SELECT seq FROM findings WHERE status='non_compliant' ORDER BY seq LIMIT 1").scalar()
        db.execute(sa.text("UPDATE findings SET status='compliant' WHERE seq=:s"), {"s": seq})
    code, out = _verify(state)
    assert code == 4, out
    assert f"findings row seq={seq}" in out and "row changed" in out


def test_one_byte_flip_in_the_file_is_found(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _fill(state)  # closed: the WAL is checkpointed into the main file
    path = state / "audit.sqlite3"
    data = bytearray(path.read_bytes())
    needle = b"Installer exit code 1603"  # a findings row's reason (and the host result JSON)
    at = data.find(needle)
    assert at > 0
    data[at + len(needle) - 1] ^= 0x01  # 1603 -> 1602
    path.write_bytes(bytes(data))
    code, out = _verify(state)
    assert code == 4, out
    assert "CHAIN BROKEN" in out and "row changed since it was written" in out


def test_deleted_and_foreign_rows_are_found(store_at: str, tmp_path: Path) -> None:
    state = store_at
    run_id = _fill(state)
    with raw(state) as db:
        drop_append_only(db, "run_events", "DELETE")
        db.exec_driver_sql("DELETE FROM run_events WHERE state='note'")
    code, out = _verify(state)
    assert code == 4 and "row deleted" in out and "run_events" in out
    # a row slipped in below the chained rowids is outside the chain (a second store, same engine)
    with store_location("postgresql" if is_store_url(store_at) else "sqlite", tmp_path / "second") as state2:
        _fill(state2)
        with raw(state2) as db:
            db.execute(sa.text("INSERT INTO run_events(seq, run_id, at, state, detail)"
                               " VALUES (0, :r, 'x', 'note', 'forged')"), {"r": run_id})
        code, out = _verify(state2)
    assert code == 4 and "not in the chain" in out


def test_upgrade_chains_rows_written_before_the_chain_existed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    MIGRATIONS[0](db)  # a store as kbfix v1 left it
    db.execute("INSERT INTO schema_version VALUES (1, 'then')")
    db.execute("INSERT INTO runs(id, kind, started, operator, kbfix_version, options) VALUES "
               "('r-old', 'check', '2026-01-01T00:00:00+00:00', 'root', '0.1.0', '{}')")
    db.close()
    with AuditStore(path) as store:
        assert store.run_info("r-old").change_ticket is None  # new column NULL in the old row
        rep = store.verify_chain()
        assert rep.ok and rep.entries == 1
    row = {"id": "r-old", "kind": "check", "started": "2026-01-01T00:00:00+00:00", "operator": "root",
           "kbfix_version": "0.1.0", "options": "{}"}
    db = sqlite3.connect(path)
    assert db.execute("SELECT row_hash FROM chain").fetchone()[0] == row_hash("runs", row)


def test_report_hash_recorded_and_a_one_byte_edit_detected(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_id = _fill(state)
    out = tmp_path / "audit.html"
    with AuditStore.in_dir(state) as store:
        info = store.run_info(run_id)
        doc = document_for_run(store, info, store.host_results(run_id), ADVISORIES)
        digest = write_recorded(store, doc, out, lang="de")
        assert identify(store, out).known and identify(store, out).sha256 == digest
        assert store.reports(run_id)[0]["format"] == "html"
    code, text = _verify(state, str(out))
    assert code == 0 and f"run {run_id}" in text and "html, de" in text
    data = bytearray(out.read_bytes())
    i = data.find(b"wsus-ber-03")
    data[i] = ord("W")
    out.write_bytes(bytes(data))
    code, text = _verify(state, str(out))
    assert code == 4 and "NOT a report kbfix wrote" in text
    # the report row itself is chained: the store still verifies
    assert "chain intact" in text


def test_cli_report_records_its_hash(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _fill(state)
    out = tmp_path / "r.md"
    r = runner.invoke(app, ["--state", str(state), "report", "latest", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert _verify(state, str(out))[0] == 0
    assert _verify(state, str(tmp_path / "missing.html"))[0] == 2


def test_verify_without_a_store_is_a_usage_error(tmp_path: Path) -> None:
    code, _out = _verify(tmp_path / "nothing-here")
    assert code == 2
    assert not (tmp_path / "nothing-here").exists()  # verify never creates a store


@pytest.mark.parametrize("value", [b"\x00\xff", "Zürich 上海".encode()])
def test_row_hash_covers_blobs_and_text(value: bytes) -> None:
    a = row_hash("t", {"x": value, "n": None})
    assert a == row_hash("t", {"x": value}) != row_hash("t", {"x": value + b"!"})


def test_who_and_why_recorded(tmp_path: Path) -> None:
    info = RunInfo(id="r1", kind="apply", started=datetime(2026, 1, 1, tzinfo=timezone.utc), operator="anna@ops1",
                   kbfix_version="0", change_ticket="CHG-0042", approved_by="CAB 2026-11")
    with AuditStore.in_dir(tmp_path) as store:
        store.begin_run(info)
        back = store.run_info("r1")
    assert (back.operator, back.change_ticket, back.approved_by) == ("anna@ops1", "CHG-0042", "CAB 2026-11")


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    state = tmp_path_factory.mktemp("template")
    _fill(state)
    return (state / "audit.sqlite3").read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_one_character_edit_of_any_row_is_named(template_store: bytes, tmp_path: Path, data: st.DataObject) -> None:
    # A fresh folder per example, and the connection closed whatever happens: an example that
    # `assume` rejects used to leave its connection open, and a later one drawing the same file
    # name then wrote the template under it; the open connection's WAL index could show the later
    # one an earlier example's edit (seen in CI as a break named in the wrong table).
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "store.sqlite3"
    path.write_bytes(template_store)
    db = sqlite3.connect(path)
    try:
        table = data.draw(st.sampled_from([t for t in CHAINED if db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]]))  # noqa: S608
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[2] == "TEXT"]
        rowids = [r[0] for r in db.execute(f"SELECT rowid FROM {table}")]  # noqa: S608
        rid = data.draw(st.sampled_from(rowids))
        col = data.draw(st.sampled_from(cols))
        value = db.execute(f"SELECT {col} FROM {table} WHERE rowid=?", (rid,)).fetchone()[0]  # noqa: S608
        assume(value)
        i = data.draw(st.integers(0, len(value) - 1))
        edited = value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1:]
        for name, in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        db.execute(f"UPDATE {table} SET {col}=? WHERE rowid=?", (edited, rid))  # noqa: S608
        db.commit()
        rep = chain_verify(db)
    finally:
        db.close()
    assert not rep.ok and rep.broken is not None
    assert (rep.broken.table, rep.broken.rowid) == (table, rid)
