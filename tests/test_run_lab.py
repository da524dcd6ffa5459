"""check / plan / apply against the embedded lab (real WinRM over loopback): zero mutating ops in
plan, serial batches with a max-fail stop, a change window closing midway, and exit codes.
The SIGKILL + resume test is in test_run_crash.py."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.rollout import parse_serial
from kbfix.run import RunOptions, exit_code, run_apply, run_check, run_plan, skip_reason
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from kbfix.window import ChangeWindow
from playbooks.model import Status
from winlab.fixtures import DEMO_SITE, demo_site, load_host_fixture_text
from winlab.lab import Lab

SERVERS = ["WSUS-SP1", "WSUS-RTM", "CM07-SITE", "WSUS-DK", "WSUS-DE", "WSUS-NL", "WSUS-CN"]


def make_packages(folder: Path) -> Path:
    """Stand-in update packages (the lab checks their SHA-256, not their content) and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for kb, name in (("KB954960", "WSUS3.0SP1-KB954960-x64.exe"), ("KB954474", "SCCM2007-SP1-KB954474-ENU.msi")):
        data = f"stand-in package {name}\n".encode()
        (folder / name).write_bytes(data)
        entries.append(f"  - kb: {kb}\n    file: {name}\n    sha256: {hashlib.sha256(data).hexdigest()}\n"
                       "    args: ['/quiet', '/norestart']\n")  # an .exe needs its switches in the manifest
    (folder / "manifest.yaml").write_text("packages:\n" + "".join(entries), encoding="utf-8")
    return folder


def demo_text(*, fail_host: str | None = None, time_scale: float | None = None) -> str:
    """The demo fixture text, with one host's KB954960 installer failing with 1603
    (ERROR_INSTALL_FAILURE, Windows Installer error codes) and/or every sleep scaled."""
    text = DEMO_SITE.read_text(encoding="utf-8")
    if fail_host is not None:
        block = re.compile(rf"(  - name: {re.escape(fail_host)}\n(?:    .*\n|      .*\n)*?)    installers: \[\*kb954960_fix\]")
        text, n = block.subn(r"\1    installers: [{match: '*KB954960*', exit_code: 1603, seconds: 0.2}]", text, count=1)
        assert n == 1, f"{fail_host} block not found in the demo fixture"
    if time_scale is not None:
        text = re.sub(r"^(  - name: .*)$", rf"\1\n    time_scale: {time_scale}", text, flags=re.M)
    return text


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    return make_packages(tmp_path / "pkgs")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore.in_dir(tmp_path / "state") as s:
        yield s


def _hosts(lab: Lab, tmp_path: Path, names: list[str] | None = None) -> list:
    inv = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")])
    hosts = inv.select(None)
    return [h for h in hosts if names is None or h.name in names]


def test_plan_on_demo_site_executes_zero_mutating_ops(tmp_path: Path, packages: Path, store: AuditStore) -> None:
    with Lab(demo_site()) as lab:
        hosts = _hosts(lab, tmp_path)
        out = run_plan(hosts, PlaybookEngine(packages_dir=packages), store, RunOptions())
        assert out.plan is not None
        planned = {h.host: len(h.planned) for h in out.plan.hosts if h.planned}
        assert planned.keys() >= {"WSUS-SP1", "CM07-SITE", "WSUS-RTM"}
        for h in lab.hosts:
            rec = lab.records(h.name)
            assert rec.mutations == [], h.name
            assert rec.processes_started <= 1, h.name  # one agent run per host
        assert lab.open_shells() == 0
        assert len(store.planned(out.info.id)) == sum(planned.values())
        plan_path = out.plan.write(tmp_path / "plan.json")
        assert '"facts_digest"' in plan_path.read_text(encoding="utf-8")


def test_apply_serial_batches_stop_at_max_fail(tmp_path: Path, packages: Path, store: AuditStore) -> None:
    lab_hosts = load_host_fixture_text(demo_text(fail_host="WSUS-DK", time_scale=0.05), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        hosts = _hosts(lab, tmp_path, SERVERS)
        engine = PlaybookEngine(packages_dir=packages)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        out = run_apply(hosts, engine, store, RunOptions(serial=parse_serial("1,50%,100%"), max_fail_percent=30),
                        plan=plan)
        by = {r.host: r for r in out.results}
        # batches: [WSUS-SP1] [WSUS-RTM, CM07-SITE, WSUS-DK] [WSUS-DE, WSUS-NL, WSUS-CN]
        assert by["WSUS-SP1"].status is Status.REMEDIATED
        assert by["WSUS-DK"].status is Status.FAILED
        assert by["CM07-SITE"].status is Status.REMEDIATED
        for name in ("WSUS-DE", "WSUS-NL", "WSUS-CN"):
            assert by[name].status is Status.SKIPPED and skip_reason(by[name]) == "max_fail"
            assert lab.records(name).mutations == []  # never touched
        assert exit_code(out.results) == 4
        # The store tells the story: the failed installer's exit code, the stop, the skipped hosts.
        rows = store.intents(out.info.id)
        assert [(r["host"], r["exit_code"]) for r in rows if r["outcome"] == "failed"] == [("WSUS-DK", 1603)]
        assert all(r["outcome"] is not None for r in rows)
        notes = [e["detail"] for e in store.events(out.info.id) if e["state"] == "note"]
        assert any("batch 2" in n and "1 of 3" in n for n in notes)
        stored = {r.host: r.status for r in store.host_results(out.info.id)}
        assert stored == {r.host: r.status for r in out.results}
        assert store.run_info(out.info.id).state == "completed"
        assert lab.open_shells() == 0


def test_apply_window_closing_midway(tmp_path: Path, packages: Path, store: AuditStore) -> None:
    with Lab(demo_site()) as lab:  # KB954960 installer: 2 s in the fixture
        names = ["WSUS-SP1", "WSUS-DE", "WSUS-NL"]
        hosts = _hosts(lab, tmp_path, names)
        engine = PlaybookEngine(packages_dir=packages)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        estimate = plan.host("WSUS-SP1").estimated_seconds  # type: ignore[union-attr]
        now = datetime.now(timezone.utc)
        # Room for exactly one host's estimate, plus 1.5 s of slack: once the first (2 s) install
        # has run, no other host's estimate fits any more — the window has closed for new work.
        window = ChangeWindow(now - timedelta(seconds=1), now + timedelta(seconds=estimate + 1.5))
        out = run_apply(hosts, engine, store, RunOptions(forks=1, window=window), plan=plan)
        st = [r.status for r in out.results]
        assert st[0] is Status.REMEDIATED
        assert st[1:] == [Status.SKIPPED, Status.SKIPPED]
        assert {skip_reason(r) for r in out.results[1:]} == {"window"}
        assert [m.op for m in lab.records("WSUS-DE").mutations] == []
        assert store.run_info(out.info.id).window == str(window)
        assert exit_code(out.results) == 3


def test_cli_check_exit_codes(tmp_path: Path, packages: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "state"
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        base = ["-q", "-i", str(inv), "--state", str(state)]
        up = [*base, "--limit", "!WSUS-DOWN:!WSUS-LOCKED"]
        r = runner.invoke(app, [*base, "--limit", "WSUS-DOWN:WSUS-SP1", "check"])
        assert r.exit_code == 4, r.output  # WSUS-DOWN refuses connections
        r = runner.invoke(app, [*base, "--limit", "WSUS-DOWN:WSUS-SP1", "ping"])
        assert r.exit_code == 4 and "WSUS-SP1\tok\tWSUS-SP1" in r.output and "WSUS-DOWN\tFAILED" in r.output
        assert runner.invoke(app, [*base, "--limit", "WSUS-SP1", "ping"]).exit_code == 0
        r = runner.invoke(app, [*up[1:], "check", "--report", str(tmp_path / "before.json")])  # not -q: the table
        assert r.exit_code == 3, r.output
        row = next(ln for ln in r.output.splitlines() if "WSUS-SP1 " in ln)
        assert "non_compliant" in row and "wsus_server" in row and "3.1.6001.65" in row  # status, role, version
        assert '"non_compliant"' in (tmp_path / "before.json").read_text(encoding="utf-8")
        r = runner.invoke(app, [*up, "apply", "--packages", str(packages), "--yes"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, [*up, "check", "--format", "json"])
        assert r.exit_code == 0, r.output
        assert '"schema"' in r.output or '"kbfix/report/v1"' in r.output
        r = runner.invoke(app, ["--state", str(state), "history"])
        assert r.exit_code == 0 and "apply" in r.output
        r = runner.invoke(app, ["--state", str(state), "report", "latest", "-o", str(tmp_path / "r.html")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "r.html").stat().st_size > 0


def test_a_hanging_host_hits_its_deadline_without_stalling_the_others(tmp_path: Path, store: AuditStore) -> None:
    text = demo_text().replace("  - name: WSUS-NL\n", "  - name: WSUS-NL\n    faults: {connect: hang}\n", 1)
    with Lab(load_host_fixture_text(text, "demo", DEMO_SITE.parent)) as lab:
        hosts = _hosts(lab, tmp_path, ["WSUS-SP1", "WSUS-NL", "WSUS-CN", "CM07-SITE"])
        t0 = time.monotonic()
        out = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=2, host_deadline_s=1.5))
        elapsed = time.monotonic() - t0
        by = {r.host: r for r in out.results}
        assert by["WSUS-NL"].status is Status.UNREACHABLE
        assert by["WSUS-NL"].error is not None and "deadline" in by["WSUS-NL"].error.message
        assert {by[h].status for h in ("WSUS-SP1", "WSUS-CN", "CM07-SITE")} == {Status.NON_COMPLIANT}
        assert elapsed < 6  # the hung host held one fork for 1.5 s, not the run


def test_apply_skips_a_host_whose_facts_drifted_since_the_plan(tmp_path: Path, packages: Path,
                                                                store: AuditStore) -> None:
    lab_hosts = load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        hosts = _hosts(lab, tmp_path, ["WSUS-SP1", "WSUS-DK"])
        engine = PlaybookEngine(packages_dir=packages)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        # Someone patches WSUS-DK between the review and the window (here: another apply).
        run_apply([h for h in hosts if h.name == "WSUS-DK"], engine, store, RunOptions(), plan=plan)
        out = run_apply(hosts, engine, store, RunOptions(), plan=plan)
        by = {r.host: r for r in out.results}
        assert by["WSUS-SP1"].status is Status.REMEDIATED
        assert by["WSUS-DK"].status is Status.SKIPPED and skip_reason(by["WSUS-DK"]) == "drift"
        assert len([m for m in lab.records("WSUS-DK").mutations if m.op == "installer.run"]) == 1
