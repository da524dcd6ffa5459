"""Host locks that end (issue 20 finding 7): a crash under another hostname (a container) left a
lock nobody could take: every apply said "skipped (locked)". Now a lock has a lease its holder
renews, and `kbfix unlock HOST --run RUN` releases it with a journal entry naming the operator.
Applies run against the lab through the `kbfix` script."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from kbfix.runinfo import RunInfo
from kbfix.store import STORE_FILE, AuditStore, HostLockedError, operator_name
from tests.pgdb import ENGINES, raw, store_location
from winlab.fixtures import demo_site
from winlab.lab import Lab
from winlab.standin_packages import write_standin_packages

KBFIX = Path(sys.executable).with_name("kbfix")
HOST = "WSUS-SP1"


@pytest.fixture(params=ENGINES)
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`--state` of each engine: an SQLite state directory, a fresh PostgreSQL database's URL."""
    with store_location(request.param, tmp_path) as where:
        yield where


def _packages(folder: Path) -> Path:
    """The lab's stand-in packages and manifest (winlab/standin_packages.py)."""
    return write_standin_packages(folder)


def _crashed_run_elsewhere(state: str, *, lease_left_s: float) -> str:
    """A run that took HOST's lock on another machine (a container) and died there: the row as
    that process wrote it, with `lease_left_s` seconds of lease left (negative: lapsed)."""
    run_id = "20261127T100000Z-deadbeef"
    with AuditStore.in_dir(state) as store:
        store.begin_run(RunInfo(id=run_id, kind="apply", started=datetime.now(timezone.utc), operator="ops1",
                                kbfix_version="0"))
    now = datetime.now(timezone.utc)
    with raw(state) as db:
        db.execute(sa.text("INSERT INTO host_locks(host, run_id, pid, machine, acquired, lease_until)"
                           " VALUES (:h, :r, 4242, 'container-7f3a', :a, :u)"),
                   {"h": HOST, "r": run_id, "a": now.isoformat(), "u": (now + timedelta(seconds=lease_left_s)).isoformat()})
    return run_id


def _apply(inv: Path, state: str, pkgs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KBFIX), "-i", str(inv), "--state", str(state), "--limit", HOST, "apply", "--yes",
                           "--packages", str(pkgs)], capture_output=True, text=True, timeout=180, check=False)


def test_unlock_releases_a_lock_left_by_a_crash_elsewhere_and_journals_the_operator(store_at: str,
                                                                                   tmp_path: Path) -> None:
    state, pkgs = store_at, _packages(tmp_path / "pkgs")
    dead = _crashed_run_elsewhere(state, lease_left_s=3600)
    with Lab(demo_site()) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        first = _apply(inv, state, pkgs)
        assert first.returncode == 3 and "locked" in first.stderr, first.stderr
        assert lab.records(HOST).mutations == []  # nothing was sent to a locked host
        unlock = subprocess.run([str(KBFIX), "--state", str(state), "unlock", HOST, "--run", dead],
                                capture_output=True, text=True, timeout=60, check=False)
        assert unlock.returncode == 0, unlock.stderr
        second = _apply(inv, state, pkgs)
        assert second.returncode == 0, second.stderr
        assert lab.records(HOST).mutations  # the fix ran once the lock was released
    with AuditStore.in_dir(state) as store:
        notes = [e["detail"] for e in store.events(dead) if e["state"] == "note"]
        assert store.lock_holder(HOST) is None
    assert any(f"host lock on {HOST} released by operator {operator_name()}" in n and "container-7f3a" in n
               for n in notes)
    again = subprocess.run([str(KBFIX), "--state", str(state), "unlock", HOST, "--run", dead],
                           capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 2 and "holds no lock" in again.stderr


def test_a_lapsed_lease_is_taken_over(store_at: str, tmp_path: Path) -> None:
    state, pkgs = store_at, _packages(tmp_path / "pkgs")
    _crashed_run_elsewhere(state, lease_left_s=-1)
    with Lab(demo_site()) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        out = _apply(inv, state, pkgs)
        assert out.returncode == 0, out.stderr
        assert lab.records(HOST).mutations


def test_a_live_holder_renews_its_lease(store_at: str) -> None:
    with AuditStore.in_dir(store_at) as store:
        store.lock_lease_s = 0.3
        store.lock_hosts("run-a", ["h1"])
        first = store.lock_holder("h1")
        time.sleep(0.8)  # past the first lease: only renewal keeps it
        renewed = store.lock_holder("h1")
        assert first is not None and renewed is not None and renewed.lease_until > first.lease_until  # type: ignore[operator]
        with AuditStore.in_dir(store_at) as other:
            other.lock_lease_s = 0.3
            with pytest.raises(HostLockedError):
                other.lock_hosts("run-b", ["h1"], pid=1)
        store.unlock_hosts("run-a")


def test_a_store_from_before_leases_is_migrated_and_its_foreign_locks_expire(tmp_path: Path) -> None:
    """A v1 store (no lease column) with a lock from another machine: after the lease migration
    the lock has no lease and is taken over; one held by a live local process is kept."""
    from kbfix.store.schema import MIGRATIONS

    path = tmp_path / STORE_FILE
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO schema_version VALUES (1, '2026-01-01')")
    db.execute("INSERT INTO host_locks VALUES ('far', 'old-run', 4242, 'container-7f3a', '2026-01-01T00:00:00+00:00')")
    db.execute("INSERT INTO host_locks VALUES ('near', 'old-run', ?, ?, '2026-01-01T00:00:00+00:00')",
               (os.getpid(), socket.gethostname()))
    db.close()
    with AuditStore(path) as store:
        assert store.lock_holder("far") is not None and store.lock_holder("far").lease_until is None  # type: ignore[union-attr]
        store.lock_hosts("new-run", ["far"], pid=1)
        assert store.lock_holder("far").run_id == "new-run"  # type: ignore[union-attr]
        with pytest.raises(HostLockedError):
            store.lock_hosts("new-run", ["near"], pid=1)
