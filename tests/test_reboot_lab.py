"""Issue 21: restarts inside the change window, through the lab (real WS-Man, pywinrm, NTLM).

The lab host goes down (connection refused) for its fixture's reboot time, comes back with a new
LastBootUpTime, its at-boot renames done and its pending indicators cleared (winlab/power.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from inventory import load_inventory
from kbfix.report import build_document
from kbfix.run import RunOptions, exit_code, run_apply, run_check, run_plan, skip_reason
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from kbfix.window import ChangeWindow
from playbooks.model import Status
from playbooks.reboot import RebootOptions
from remoting.agent_protocol import op
from remoting.errors import CheckModeViolation
from remoting.session import AgentSession
from tests.helpers import child_env, kbfix_argv, write_plan
from tests.test_run_lab import make_packages
from winlab.fixtures import load_host_fixture_text
from winlab.lab import Lab

DLL = r"C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"

SITE = r"""
x-wsus: &wsus
  os: {version: 6.0.6001, arch: x64, culture: en-US}
  accounts: {'LAB\kbfix': 'Secret-1'}
  time_scale: %(scale)s
  registry:
    'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
      {VersionString: 3.1.6001.65, TargetDir: 'C:\Program Files\Update Services\', InstallType: 1}
  files:
    '%(dll)s': {version: 3.1.6001.65}
x-fixed-at-boot: &fixed
  files:
    '%(dll)s': {version: 3.1.6001.66}
hosts:
  # The update replaces a DLL that w3wp.exe holds open: exit 3010, the new file lands at the restart.
  - {name: WSUS-3010, <<: *wsus, boot: {reboot_seconds: %(down)s},
     installers: [{match: '*KB954960*', exit_code: 3010, seconds: 1, at_boot: *fixed}]}
  - {name: WSUS-GONE, <<: *wsus, boot: {comes_back: false},
     installers: [{match: '*KB954960*', exit_code: 3010, seconds: 1, at_boot: *fixed}]}
  - {name: WSUS-OK, <<: *wsus, installers: [{match: '*KB954960*', exit_code: 0, seconds: %(ok_s)s, sets: *fixed}]}
  - {name: WSUS-LATE, <<: *wsus, installers: [{match: '*KB954960*', exit_code: 0, seconds: 1, sets: *fixed}]}
  # Fixed already, but a rename is registered for the next boot (MoveFileEx MOVEFILE_DELAY_UNTIL_REBOOT).
  # (written out: the fixture loader refuses a merge key overridden by an explicit key)
  - name: WSUS-PFRO
    os: {version: 6.0.6001, arch: x64, culture: en-US}
    accounts: {'LAB\kbfix': 'Secret-1'}
    files: {'%(dll)s': {version: 3.1.6001.66}}
    registry:
      'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
        {VersionString: 3.1.6001.65, TargetDir: 'C:\Program Files\Update Services\', InstallType: 1}
      'HKLM\SYSTEM\CurrentControlSet\Control\Session Manager':
        PendingFileRenameOperations: ['\??\C:\Windows\Temp\kb.tmp', '!\??\C:\Windows\system32\x.dll']
"""


def _site(scale: float = 0.02, down: float = 50, ok_s: float = 1) -> str:
    return SITE % {"scale": scale, "dll": DLL, "down": down, "ok_s": ok_s}


def _hosts(lab: Lab, tmp_path: Path, names: list[str]) -> list:
    inv = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")])
    by = {h.name: h for h in inv.select(None)}
    return [by[n] for n in names]


@contextlib.contextmanager
def _planned(tmp_path: Path, names: list[str], **site: float) -> Iterator[tuple[Lab, AuditStore, list, PlaybookEngine, Any]]:
    """The reboot site in a lab, `names` selected, a store, the engine with packages, and their plan."""
    packages = make_packages(tmp_path / "pkgs")
    with Lab(load_host_fixture_text(_site(**site), "reboot-site")) as lab, AuditStore.in_dir(tmp_path / "state") as store:
        hosts = _hosts(lab, tmp_path, names)
        engine = PlaybookEngine(packages_dir=packages)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        yield lab, store, hosts, engine, plan


def _ops(lab: Lab, name: str) -> list[str]:
    return [m.op for m in lab.records(name).mutations]


def _kb(result):  # the KB954960 finding of a host result
    return next(f for f in result.findings if f.advisory == "KB954960")


def _host(lab: Lab, name: str):  # the EmulatedHost behind the listener
    return lab.server.listeners[name].host


FAST = RebootOptions(policy="if-needed", timeout_s=20, pre_reboot_delay=0, poll_s=0.1)


def test_installer_3010_then_restart_then_verify_is_remediated(tmp_path: Path) -> None:
    with _planned(tmp_path, ["WSUS-3010", "WSUS-OK"]) as (lab, store, hosts, engine, plan):
        boot_before = _host(lab, "WSUS-3010").power.boot_time
        out = run_apply(hosts, engine, store, RunOptions(reboot=FAST), plan=plan)
        by = {r.host: r for r in out.results}
        f = _kb(by["WSUS-3010"])
        assert by["WSUS-3010"].status is Status.REMEDIATED, f.reason
        assert by["WSUS-OK"].status is Status.REMEDIATED
        assert _ops(lab, "WSUS-OK").count("system.reboot") == 0  # exit 0: no restart needed
        # One restart, journalled: intent then result; the lab went down and came back.
        assert _ops(lab, "WSUS-3010").count("system.reboot") == 1
        power = _host(lab, "WSUS-3010").power
        assert power.restarts == 1 and power.boot_time > boot_before
        assert lab.records("WSUS-3010").faults_injected.get("reboot_down") == 1
        rows = [r for r in store.intents(out.info.id) if r["host"] == "WSUS-3010"]
        assert [(r["action_id"], r["outcome"]) for r in rows][-1] == ("reboot", "success")
        reboot = [e for e in f.executed if e.action_id == "reboot"]
        assert len(reboot) == 1 and reboot[0].outcome == "success"
        assert "down 20" in (reboot[0].detail or "") and "boot time 2008-08-01T06:00:00+00:00 →" in (reboot[0].detail or "")
        # After the restart the indicators are gone and the DLL is the fixed one (applied at boot).
        ev = {e.probe: e for e in f.verification}
        assert any("3.1.6001.66" in (e.value or "") for e in f.verification)
        assert "system.reboot_state" not in ev  # nothing pending any more: no indicator evidence
        # The report document carries the restart as an executed action (requested/down/up/duration).
        doc = build_document(out.info, out.results, engine.advisories())
        text = str(doc)
        assert "'action_id': 'reboot'" in text and "restart requested" in text
        assert exit_code(out.results) == 0


def test_reboot_never_leaves_pending_reboot_with_the_indicator_as_evidence(tmp_path: Path) -> None:
    with _planned(tmp_path, ["WSUS-3010"]) as (lab, store, hosts, engine, plan):
        out = run_apply(hosts, engine, store, RunOptions(), plan=plan)  # default: --reboot never
        (r,) = out.results
        f = _kb(r)
        assert r.status is Status.PENDING_REBOOT
        assert "system.reboot" not in _ops(lab, "WSUS-3010") and _host(lab, "WSUS-3010").power.restarts == 0
        ind = [e for e in f.verification if e.probe == "system.reboot_state"]
        assert ind and "PendingFileRenameOperations is set" in (ind[0].value or "")
        assert DLL.lower() in (ind[0].note or "").lower()  # the staged rename of the in-use DLL
        assert "Not restarted: --reboot never" in f.reason
        assert exit_code(out.results) == 3


def test_a_host_that_never_comes_back_fails_after_the_timeout_while_the_batch_goes_on(tmp_path: Path) -> None:
    # WSUS-OK's installer takes 2 s (scale 0.02 × 100): it finishes while WSUS-GONE's restart is awaited.
    with _planned(tmp_path, ["WSUS-GONE", "WSUS-OK", "WSUS-LATE"], ok_s=100) as (_lab, store, hosts, engine, plan):
        opts = RunOptions(forks=2, serial=[], reboot=RebootOptions(policy="if-needed", timeout_s=4, pre_reboot_delay=0,
                                                                    poll_s=0.2), max_fail_percent=0)
        from kbfix.rollout import parse_serial
        opts.serial = parse_serial("2,100%")
        t0 = time.monotonic()
        out = run_apply(hosts, engine, store, opts, plan=plan)
        elapsed = time.monotonic() - t0
        by = {r.host: r for r in out.results}
        gone = by["WSUS-GONE"]
        assert gone.status is Status.FAILED
        assert "did not come back within 4 s" in _kb(gone).reason
        assert elapsed < 30
        assert by["WSUS-OK"].status is Status.REMEDIATED
        assert by["WSUS-OK"].ended < gone.ended  # the other host of the batch finished meanwhile
        # It counts toward max-fail: the next batch is not started.
        assert by["WSUS-LATE"].status is Status.SKIPPED and skip_reason(by["WSUS-LATE"]) == "max_fail"
        rows = [r for r in store.intents(out.info.id) if r["host"] == "WSUS-GONE"]
        assert rows[-1]["action_id"] == "reboot" and rows[-1]["outcome"] == "failed"
        assert exit_code(out.results) == 4


def test_a_window_too_short_for_the_restart_does_not_restart(tmp_path: Path) -> None:
    with _planned(tmp_path, ["WSUS-3010"]) as (lab, store, hosts, engine, plan):
        now = datetime.now(timezone.utc)
        estimate = plan.host("WSUS-3010").estimated_seconds  # type: ignore[union-attr]
        window = ChangeWindow(now - timedelta(seconds=1), now + timedelta(seconds=estimate + 30))
        reboot = RebootOptions(policy="if-needed", timeout_s=600, pre_reboot_delay=0, poll_s=0.1)
        out = run_apply(hosts, engine, store, RunOptions(window=window, reboot=reboot), plan=plan)
        (r,) = out.results
        assert r.status is Status.PENDING_REBOOT
        assert "does not leave 600 s for a restart" in _kb(r).reason
        assert "system.reboot" not in _ops(lab, "WSUS-3010")
        assert "installer.run" in _ops(lab, "WSUS-3010")  # the install itself fitted


def test_pending_file_rename_operations_read_pending_reboot_on_a_plain_check(tmp_path: Path) -> None:
    with Lab(load_host_fixture_text(_site(), "reboot-site")) as lab, AuditStore.in_dir(tmp_path / "state") as store:
        hosts = _hosts(lab, tmp_path, ["WSUS-PFRO", "WSUS-OK"])
        out = run_check(hosts, PlaybookEngine(), store, RunOptions())
        by = {r.host: r for r in out.results}
        assert by["WSUS-PFRO"].status is Status.PENDING_REBOOT
        f = _kb(by["WSUS-PFRO"])
        ev = [e for e in f.evidence if e.probe == "system.reboot_state"]
        assert ev and "PendingFileRenameOperations is set (2 strings)" in (ev[0].value or "")
        assert "Windows reports a restart pending" in f.reason
        assert by["WSUS-OK"].status is Status.NON_COMPLIANT  # no indicator: the check is unchanged
        assert all(lab.records(n).mutations == [] for n in ("WSUS-PFRO", "WSUS-OK"))


def test_check_mode_refuses_the_restart_before_sending_it(tmp_path: Path) -> None:
    with Lab(load_host_fixture_text(_site(), "reboot-site")) as lab:
        ep = lab.endpoints["WSUS-3010"]
        from remoting.endpoint import Endpoint, Secret, Timeouts
        endpoint = Endpoint(host="WSUS-3010", address=ep.address, port=ep.port, scheme="http", transport="ntlm",
                            username="LAB\\kbfix", password=Secret("Secret-1"),
                            timeouts=Timeouts(connect=3, operation=5, read=10, command=20))
        with AgentSession(endpoint, check_mode=True) as s, pytest.raises(CheckModeViolation):
            s.run([op("r", "system.reboot", delay="0")])
        assert lab.records("WSUS-3010").mutations == [] and lab.records("WSUS-3010").processes_started == 0
        assert _host(lab, "WSUS-3010").power.restarts == 0


@pytest.mark.slow
def test_sigkill_during_the_wait_then_resume_rereads_and_does_not_restart_twice(tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = tmp_path / "state"
    # Real time: the restart keeps the host down about 4 s (shutdown 0.2 s + reboot 4 s).
    with Lab(load_host_fixture_text(_site(scale=1, down=4), "reboot-site")) as lab:
        inv_path = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = _hosts(lab, tmp_path, ["WSUS-3010"])
        write_plan(hosts, packages, state, tmp_path / "plan.json")
        common = ["-q", "-i", str(inv_path), "--state", str(state), "--limit", "WSUS-3010"]
        env = child_env()
        proc = subprocess.Popen(
            kbfix_argv(*common, "apply", "--plan", str(tmp_path / "plan.json"), "--packages", str(packages),
                   "--reboot", "if-needed", "--pre-reboot-delay", "0", "--reboot-timeout", "60"),
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while "system.reboot" not in _ops(lab, "WSUS-3010"):
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the restart was never requested"
                time.sleep(0.05)
            time.sleep(0.5)  # inside the wait: the host is going down
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        power = _host(lab, "WSUS-3010").power
        deadline = time.monotonic() + 30
        while power.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the host finishes its restart on its own
        res = subprocess.run(kbfix_argv(*common, "apply", "--resume", "latest", "--packages", str(packages),
                                    "--reboot", "if-needed", "--pre-reboot-delay", "0", "--reboot-timeout", "60"),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert _ops(lab, "WSUS-3010").count("system.reboot") == 1  # never a second restart
        assert _ops(lab, "WSUS-3010").count("installer.run") == 1
        with AuditStore.in_dir(state) as store:
            runs = [store.run_info(r) for r in (store.latest_run_id("apply"),)]
            latest = runs[0]
            assert latest.state == "completed"
            killed = store.resumes(latest.id)
            assert killed is not None and store.run_info(killed).state == "interrupted"
            rows = store.intents(killed)
            assert ("reboot", "unknown") in [(r["action_id"], r["outcome"]) for r in rows]  # closed, never re-sent
            (final,) = store.host_results(latest.id)
            assert final.status in (Status.COMPLIANT, Status.REMEDIATED)


def test_the_plan_carries_the_restart_policy_to_apply(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kbfix.cli import app
    from kbfix.planfile import PlanDocument

    packages = make_packages(tmp_path / "pkgs")
    with Lab(load_host_fixture_text(_site(), "reboot-site")) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        common = ["-q", "-i", str(inv), "--state", str(tmp_path / "state"), "--limit", "WSUS-3010"]
        r = CliRunner().invoke(app, [*common, "plan", "--packages", str(packages), "-o", str(tmp_path / "plan.json"),
                                     "--reboot", "if-needed", "--reboot-timeout", "20"])
        assert r.exit_code == 3, r.output
        doc = PlanDocument.read(tmp_path / "plan.json")
        assert doc.reboot is not None and doc.reboot.policy == "if-needed" and doc.reboot.timeout == 20
        r = CliRunner().invoke(app, [*common, "apply", "--plan", str(tmp_path / "plan.json"), "--packages", str(packages),
                                     "--pre-reboot-delay", "0"])
        assert r.exit_code == 0, r.output
        assert _ops(lab, "WSUS-3010").count("system.reboot") == 1


def test_resume_restarts_a_host_that_is_still_pending_once_and_not_again(tmp_path: Path) -> None:
    with _planned(tmp_path, ["WSUS-3010"]) as (lab, store, hosts, engine, plan):
        first = run_apply(hosts, engine, store, RunOptions(), plan=plan)  # --reboot never: left pending
        assert first.results[0].status is Status.PENDING_REBOOT
        second = run_apply(hosts, engine, store, RunOptions(reboot=FAST), resume=first.info.id)
        assert second.results[0].status is Status.COMPLIANT  # re-read after the restart: fixed
        assert _ops(lab, "WSUS-3010").count("system.reboot") == 1
        assert _ops(lab, "WSUS-3010").count("installer.run") == 1  # the install is not repeated
        third = run_apply(hosts, engine, store, RunOptions(reboot=FAST), resume=second.info.id)
        assert [r.host for r in third.results] == []  # nothing left: no second restart
        assert _ops(lab, "WSUS-3010").count("system.reboot") == 1
