"""Crash safety: `kbfix apply` is SIGKILLed while a lab installer runs, then `--resume` finishes
the run. The lab's records prove no installer ran twice; the audit store must be consistent
(every intent has a result, the killed run is closed as interrupted, the resume links to it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory import load_inventory
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import Status
from tests.helpers import sigkill_when
from tests.pgdb import ENGINES, store_location
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

REPO = Path(__file__).resolve().parents[1]
HOSTS = ["WSUS-SP1", "WSUS-DK", "WSUS-DE"]
SCALE = 1.5  # the fixture's 2 s KB954960 installer takes 3 s


@pytest.fixture(params=ENGINES)
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`--state` of each engine (issue 18): an SQLite state directory, a fresh PostgreSQL database's URL."""
    with store_location(request.param, tmp_path) as where:
        yield where


def _kbfix(*args: str) -> list[str]:
    """The installed `kbfix` console script of this interpreter's environment."""
    return [str(Path(sys.executable).parent / "kbfix"), *args]


def _installs(lab: Lab, name: str) -> list[float]:
    return [m.at for m in lab.records(name).mutations if m.op == "installer.run"]


@pytest.mark.slow
def test_sigkill_during_install_then_resume_runs_no_installer_twice(store_at: str, tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = store_at
    lab_hosts = load_host_fixture_text(demo_text(time_scale=SCALE), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        inv_path = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = [h for h in load_inventory([inv_path]).select(None) if h.name in HOSTS]
        with AuditStore.in_dir(state) as store:
            plan = run_plan(hosts, PlaybookEngine(packages_dir=packages), store, RunOptions()).plan
        assert plan is not None and all(len(plan.host(h).planned) == 1 for h in HOSTS)  # type: ignore[union-attr]
        plan.write(tmp_path / "plan.json")

        common = ["-q", "-i", str(inv_path), "--state", str(state), "--limit", ",".join(HOSTS)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # forks 2: two hosts install at once, the third waits for a free fork.
        proc = subprocess.Popen(
            _kbfix(*common, "--forks", "2", "apply", "--plan", str(tmp_path / "plan.json"), "--packages", str(packages)),
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # Both forks busy installing (the third host waits): kill inside the 3 s installs.
        sigkill_when(proc, lambda: sum(1 for h in HOSTS if _installs(lab, h)) >= 2,
                     what="installers did not start", settle_s=0.2)
        started = {h: len(_installs(lab, h)) for h in HOSTS}
        assert sum(started.values()) == 2

        with AuditStore.in_dir(state) as store:
            killed = store.latest_run_id("apply")
            assert killed is not None
            assert store.run_info(killed).state == "running"  # nobody closed it
            open_before = store.open_intents(killed)
            assert {i.host for i in open_before} == {h for h, n in started.items() if n}
            assert not store.run_is_live(killed)  # the process is gone

        # Let the lab finish the installers the killed process had started (the host keeps going).
        last = max(t for h in HOSTS for t in _installs(lab, h))
        time.sleep(max(0.0, last + 2 * SCALE + 0.5 - time.time()))

        shells_before = lab.open_shells()
        res = subprocess.run(
            _kbfix(*common, "apply", "--resume", killed, "--packages", str(packages)),
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert lab.open_shells() == shells_before  # the resume closed every shell it opened

        # No installer ran twice; the host that never started got exactly one install.
        for h in HOSTS:
            assert len(_installs(lab, h)) == 1, (h, lab.records(h).snapshot()["mutations"])

        with AuditStore.in_dir(state) as store:
            assert store.open_intents(killed) == []
            closed = [r for r in store.intents(killed) if r["outcome"] == "unknown"]
            assert {r["host"] for r in closed} == {i.host for i in open_before}
            info = store.run_info(killed)
            assert info.state == "interrupted"
            [resumed] = store.resumed_by(killed)
            assert store.run_info(resumed).state == "completed"
            final = {r.host: r.status for r in store.host_results(resumed)}
            assert set(final.values()) <= {Status.COMPLIANT, Status.REMEDIATED}
            assert set(final) == set(HOSTS)
            new_installs = [r for r in store.intents(resumed) if r["kind"] == "install_package"]
            assert {r["host"] for r in new_installs} == {h for h, n in started.items() if n == 0}
            assert all(r["outcome"] == "success" for r in new_installs)


@pytest.mark.slow
def test_sigint_lets_running_install_finish_closes_shells_and_marks_interrupted(store_at: str, tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = store_at
    lab_hosts = load_host_fixture_text(demo_text(time_scale=SCALE), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        inv_path = lab.write_inventory(tmp_path / "inventory.yaml")
        common = ["-q", "-i", str(inv_path), "--state", str(state), "--limit", ",".join(HOSTS), "--forks", "1"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(_kbfix(*common, "apply", "--yes", "--packages", str(packages)),
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not any(_installs(lab, h) for h in HOSTS):
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "no installer started"
                time.sleep(0.02)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=30)
            waited = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert rc == 3  # work left undone (skipped: interrupted), nothing failed
        assert waited < 2 * SCALE + 5  # the running install finished; nothing else started
        assert lab.open_shells() == 0
        installed = [h for h in HOSTS if _installs(lab, h)]
        assert len(installed) == 1 and all(len(_installs(lab, h)) == 1 for h in installed)
        with AuditStore.in_dir(state) as store:
            run = store.latest_run_id("apply")
            assert run is not None
            info = store.run_info(run)
            assert info.state == "interrupted"
            assert [e["detail"] for e in store.events(run)][-1] == "SIGINT"
            assert store.open_intents(run) == []
            final = {r.host: r for r in store.host_results(run)}
            assert final[installed[0]].status is Status.REMEDIATED
            others = [final[h] for h in HOSTS if h not in installed]
            assert all(r.status is Status.SKIPPED for r in others)
            assert {f.skip_reason for r in others for f in r.findings if f.skip_reason} == {"interrupted"}


@pytest.mark.slow
def test_second_apply_on_a_host_being_applied_is_refused_naming_the_holder(store_at: str, tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = store_at
    lab_hosts = load_host_fixture_text(demo_text(time_scale=SCALE), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        inv_path = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = [h for h in load_inventory([inv_path]).select(None) if h.name == "WSUS-SP1"]
        engine = PlaybookEngine(packages_dir=packages)
        with AuditStore.in_dir(state) as store:
            plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        plan.write(tmp_path / "plan.json")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            _kbfix("-q", "-i", str(inv_path), "--state", str(state), "--limit", "WSUS-SP1", "apply",
                   "--plan", str(tmp_path / "plan.json"), "--packages", str(packages)),
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not _installs(lab, "WSUS-SP1"):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            with AuditStore.in_dir(state) as store:
                second = run_apply(hosts, engine, store, RunOptions(), plan=plan)
            [r] = second.results
            [skipped] = [f for f in r.findings if f.skip_reason]
            assert r.status is Status.SKIPPED and skipped.skip_reason == "locked"
            assert f"pid {proc.pid}" in skipped.reason
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert len(_installs(lab, "WSUS-SP1")) == 1
