"""An apply whose process is gone (SIGKILL, a lost ssh session, a second Ctrl-C) has no end event:
`kbfix history` and `kbfix show` must not call it `running` (an operator would wait for it, or
fear a second controller), but say its process is gone and how to finish it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.run import RunOptions, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from tests.helpers import REPO, kbfix_argv, sigkill_when
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

HOST = "WSUS-SP1"


def test_history_and_show_say_a_killed_apply_is_not_running(tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = tmp_path / "state"
    with Lab(load_host_fixture_text(demo_text(time_scale=2.0), "demo", DEMO_SITE.parent)) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = [h for h in load_inventory([inv]).select(HOST)]
        with AuditStore.in_dir(state) as store:
            plan = run_plan(hosts, PlaybookEngine(packages_dir=packages), store, RunOptions()).plan
        assert plan is not None
        plan.write(tmp_path / "plan.json")
        proc = subprocess.Popen(
            kbfix_argv("-q", "-i", str(inv), "--state", str(state), "--limit", HOST, "apply",
                       "--plan", str(tmp_path / "plan.json"), "--packages", str(packages)),
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sigkill_when(proc, lambda: any(m.op == "installer.run" for m in lab.records(HOST).mutations),
                     what="the installer did not start")
    with AuditStore.in_dir(state) as store:
        killed = store.latest_run_id("apply")
        assert killed is not None and store.run_info(killed).state == "running"  # nobody closed it
    runner = CliRunner()
    hist = runner.invoke(app, ["--state", str(state), "history"])
    row = next(line for line in hist.output.splitlines() if killed in line)
    assert "process gone" in row and "running " not in row.replace("│", " ") + " ", hist.output
    shown = runner.invoke(app, ["--state", str(state), "show", killed])
    head = shown.output.splitlines()[0]
    assert "process gone" in head and "--resume" in shown.output, shown.output
    js = runner.invoke(app, ["--state", str(state), "history", "--format", "json"])
    assert '"process_gone": true' in js.output, js.output
