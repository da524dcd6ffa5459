"""The audit store under bad conditions (issue 20 finding 12): a damaged page, a read-only store,
a disk that fills up mid-apply; and `-v` printing the traceback it promises."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.runinfo import RunInfo
from kbfix.store import STORE_FILE, AuditStore
from kbfix.store.diskguard import RESERVE_FILE
from playbooks.model import Status
from winlab.fixtures import demo_site
from winlab.lab import Lab
from winlab.standin_packages import write_standin_packages

KBFIX = Path(sys.executable).with_name("kbfix")


def _store_with_runs(state: Path, n: int = 200) -> None:
    with AuditStore.in_dir(state) as store:
        for i in range(n):
            store.begin_run(RunInfo(id=f"20261127T1000{i:02d}Z-{i:08x}", kind="check", started=datetime.now(timezone.utc),
                                    operator="ops" * 100, kbfix_version="0"))
    db = sqlite3.connect(state / STORE_FILE)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def test_a_damaged_store_page_exits_2_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _store_with_runs(state)
    path = state / STORE_FILE
    data = bytearray(path.read_bytes())
    for off in range(len(data) - 4096 * 8, len(data), 4096):  # the last pages: run rows, not the schema
        data[off:off + 400] = b"\xab" * 400
    path.write_bytes(bytes(data))
    out = subprocess.run([str(KBFIX), "--state", str(state), "history"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2, out.stderr
    assert str(path) in out.stderr and "damaged" in out.stderr and "internal error" not in out.stderr


def test_verbose_prints_the_traceback_it_promises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("kbfix-bug-for-test")

    monkeypatch.setattr("kbfix.cli.load_config", boom)
    inv = tmp_path / "inv.yml"
    inv.write_text("kbfix_inventory: 1\nhosts:\n  h1: {address: 127.0.0.1, username: u, password: p}\n", encoding="utf-8")
    runner = CliRunner()
    quiet = runner.invoke(app, ["-i", str(inv), "--state", str(tmp_path / "s"), "apply", "--yes"])
    loud = runner.invoke(app, ["-v", "-i", str(inv), "--state", str(tmp_path / "s"), "apply", "--yes"])
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.output and "run with -v" in quiet.output
    assert "Traceback (most recent call last)" in loud.output and "kbfix-bug-for-test" in loud.output


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `where` (root only: skipped elsewhere, the code path needs a real full disk)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_store_is_read_by_history_show_and_report(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "16m") as state:
        _store_with_runs(state, 3)
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        for args in (["history"], ["show", "latest"], ["report", "latest", "--format", "csv"]):
            out = subprocess.run([str(KBFIX), "--state", str(state), *args], capture_output=True, text=True,
                                 timeout=60, check=False)
            assert out.returncode in (0, 4), (args, out.stderr)  # show/report: exit code of the run's hosts
            assert "error" not in out.stderr, (args, out.stderr)
        assert "20261127T100002Z" in subprocess.run([str(KBFIX), "--state", str(state), "history"],
                                                    capture_output=True, text=True, check=False).stdout


def _packages(folder: Path) -> Path:
    """The lab's stand-in packages and manifest (winlab/standin_packages.py)."""
    return write_standin_packages(folder)


def _fill(folder: Path) -> None:
    """Take every free byte of the file system at `folder` in one go (then stop writing)."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with (folder / "filler").open("wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * free)
        fh.flush()


def test_disk_full_mid_apply_keeps_the_rows_and_closes_the_run(tmp_path: Path) -> None:
    """The disk fills while WSUS-SP1's installer runs: its result row is still written (the
    store's reserve), WSUS-DK gets no intent and so no change, the run ends `interrupted` (not
    `running`) with the reason, and every row written before is there."""
    pkgs = _packages(tmp_path / "pkgs")
    with _tmpfs(tmp_path / "state", "8m") as state, Lab(demo_site()) as lab:
        hosts = [h for h in load_inventory([lab.write_inventory(tmp_path / "inv.yaml")]).select(None)
                 if h.name in ("WSUS-SP1", "WSUS-DK")]
        hosts.sort(key=lambda h: h.name != "WSUS-SP1")
        filled = threading.Event()

        def fill_when_installing() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    m.op == "installer.run" for m in lab.records("WSUS-SP1").mutations):
                time.sleep(0.02)
            _fill(state)
            filled.set()

        engine = PlaybookEngine(packages_dir=pkgs)
        with AuditStore.in_dir(state) as store:
            assert (state / RESERVE_FILE).exists()
            plan = run_plan(hosts, engine, store, RunOptions()).plan
            filler = threading.Thread(target=fill_when_installing, daemon=True)
            filler.start()
            out = run_apply(hosts, engine, store, RunOptions(forks=1), plan=plan)
        filler.join(5)
        assert filled.is_set()
        assert lab.records("WSUS-DK").mutations == []  # no intent could be committed: nothing sent
        with AuditStore.in_dir(state, readonly=True) as again:  # what an auditor reads afterwards
            intents = again.intents(out.info.id)
            events = again.events(out.info.id)
            stored = {r.host: r.status for r in again.host_results(out.info.id)}
    by = {r.host: r for r in out.results}
    assert by["WSUS-SP1"].status in (Status.REMEDIATED, Status.PENDING_REBOOT), by["WSUS-SP1"].model_dump_json()
    assert by["WSUS-DK"].status is Status.FAILED and by["WSUS-DK"].error is not None
    assert by["WSUS-DK"].error.kind == "store" and "disk is full" in by["WSUS-DK"].error.message
    assert out.info.state == "interrupted"
    assert [e["state"] for e in events][-1] == "interrupted" and "disk filled up" in (events[-1]["detail"] or "")
    assert intents and all(i["host"] == "WSUS-SP1" and i["outcome"] is not None for i in intents)
    assert stored == {r.host: r.status for r in out.results}


def test_disk_full_while_a_deferred_group_is_written_keeps_the_group(tmp_path: Path) -> None:
    """A check's deferred group (on SQLite, inserts in the driver's own SQL: kbfix/store/host_rows.py)
    meets a full disk: the reserve is freed and the group's statements are replayed, so every host
    row, finding and fact set is stored, each finding on its own host's row, and the chain holds."""
    from kbfix.report.sample import fleet, run_info
    from kbfix.store import new_run_id

    results = fleet(10, 3)
    with _tmpfs(tmp_path / "state", "8m") as state:
        with AuditStore.in_dir(state) as store:
            info = run_info("check").model_copy(update={"id": new_run_id()})
            store.begin_run(info)
            for r in results:  # ~100 kB of facts each: more than the WAL already holds
                store.record_host(info.id, r, facts={"lines": [f"{r.host} {i} " + "x" * 7900 for i in range(12)]},
                                  defer=True)
            _fill(state)
            store.flush()
            assert store.disk_full  # the replay ran
            store.end_run(info.id, "completed")
        with AuditStore.in_dir(state, readonly=True) as again:
            assert sorted(r.host for r in again.host_results(info.id)) == sorted(r.host for r in results)
            assert all(len(again.facts(info.id, r.host)) == 1 for r in results)
            rows = again._query("SELECT h.host, f.host AS fhost FROM findings f JOIN host_results h ON h.seq = f.host_result_seq")
            assert len(rows) == 30 and all(r["host"] == r["fhost"] for r in rows)
            assert again.verify_chain().ok
            assert again.run_info(info.id).state == "interrupted"  # a full disk ends it so (end_run)
