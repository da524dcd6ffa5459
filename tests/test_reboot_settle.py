"""Issue 21, post_reboot_delay: a restarted host answers WinRM before it has settled. The lab host's
Windows Update service is a delayed auto-start service (winlab/power.py, `boot.delayed_start_seconds`):
its `RebootRequired` key outlives the boot by that long, so a verify right after the boot reads a
restart still pending. With post_reboot_delay (option, config, plan, or the host's inventory
variable `kbfix_post_reboot_delay`) kbfix waits that long once the host is back, checks it is ready
(the agent answers again, same boot), then verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.reboot import check_host_reboot_vars, options_for, restart_budget
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import Status
from playbooks.reboot import (
    RebootOptionError,
    RebootOptions,
    RebootSettings,
    reboot_and_wait,
    resolve_reboot_options,
)
from playbooks.reboot_facts import parse_reboot_state
from remoting.errors import UnreachableError
from tests.helpers import unreachable_inventory
from tests.test_reboot_units import _Journal, _ReplaySession, _timeline
from tests.test_run_lab import make_packages
from winlab.fixtures import load_host_fixture_text
from winlab.lab import Lab

DLL = r"C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"
WU = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired"

# time_scale 0.02: down 1 s (50 × 0.02), Windows Update starts 2 s (100 × 0.02) after the boot.
SITE = r"""
hosts:
  - name: WSUS-SLOW
    os: {version: 6.0.6001, arch: x64, culture: en-US}
    accounts: {'LAB\kbfix': 'Secret-1'}
    time_scale: 0.02
    boot: {reboot_seconds: 50, delayed_start_seconds: 100}
    registry:
      'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
        {VersionString: 3.1.6001.65, TargetDir: 'C:\Program Files\Update Services\', InstallType: 1}
      '%(wu)s': {}
    files:
      '%(dll)s': {version: 3.1.6001.65}
    installers:
      - {match: '*KB954960*', exit_code: 3010, seconds: 1, at_boot: {files: {'%(dll)s': {version: 3.1.6001.66}}}}
"""


def _apply(tmp_path: Path, reboot: RebootOptions, host_vars: dict[str, Any] | None = None) -> tuple[Any, Lab]:
    packages = make_packages(tmp_path / "pkgs")
    lab = Lab(load_host_fixture_text(SITE % {"dll": DLL, "wu": WU}, "settle"))
    lab.start()
    try:
        path = lab.write_inventory(tmp_path / "inventory.yaml")
        if host_vars:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            doc["hosts"]["WSUS-SLOW"]["vars"] = host_vars
            path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        hosts = list(load_inventory([path]).select(None))
        engine = PlaybookEngine(packages_dir=packages)
        with AuditStore.in_dir(tmp_path / "state") as store:
            plan = run_plan(hosts, engine, store, RunOptions()).plan
            out = run_apply(hosts, engine, store, RunOptions(reboot=reboot), plan=plan)
        return out, lab
    finally:
        lab.stop()


def _kb(out: Any) -> Any:
    (result,) = out.results
    return result, next(f for f in result.findings if f.advisory == "KB954960")


FAST = dict(policy="if-needed", timeout_s=20, pre_reboot_delay=0, poll_s=0.1)


def test_without_a_post_reboot_delay_verify_reads_the_restart_still_pending(tmp_path: Path) -> None:
    """The lab's delayed service start is real: verifying at once sees Windows Update's key."""
    out, lab = _apply(tmp_path, RebootOptions(**FAST))  # type: ignore[arg-type]
    result, f = _kb(out)
    assert lab.server.listeners["WSUS-SLOW"].host.power.restarts == 1
    assert result.status is not Status.REMEDIATED, f.reason
    assert any(e.probe == "system.reboot_state" and "RebootRequired" in (e.value or "") for e in f.verification)


def test_post_reboot_delay_lets_the_host_settle_before_verify(tmp_path: Path) -> None:
    out, _lab = _apply(tmp_path, RebootOptions(**FAST, post_reboot_delay=3))  # type: ignore[arg-type]
    result, f = _kb(out)
    assert result.status is Status.REMEDIATED, f.reason
    (reboot,) = [e for e in f.executed if e.action_id == "reboot"]
    assert reboot.outcome == "success" and ", ready " in (reboot.detail or "")


def test_the_hosts_inventory_variable_sets_its_own_delay(tmp_path: Path) -> None:
    out, _lab = _apply(tmp_path, RebootOptions(**FAST), {"kbfix_post_reboot_delay": 3})  # type: ignore[arg-type]
    result, f = _kb(out)
    assert result.status is Status.REMEDIATED, f.reason


# ------------------------------------------------------------------------------------ units


@pytest.mark.parametrize("value", [-1, 3601, 1.5, "ten", True])
def test_post_reboot_delay_is_bounded(value: Any) -> None:
    with pytest.raises(RebootOptionError, match=r"post_reboot_delay.*0\.\.3600"):
        RebootOptions(post_reboot_delay=value)


def test_post_reboot_delay_layers_and_counts_in_the_budget() -> None:
    o = resolve_reboot_options(RebootSettings(post_reboot_delay=30), RebootSettings(post_reboot_delay=5))
    assert o.post_reboot_delay == 30 and o.budget_s == 2 + 600 + 30
    assert resolve_reboot_options().post_reboot_delay == 0  # win_reboot's default


class _Host:
    def __init__(self, name: str, **host_vars: Any) -> None:
        self.name, self.vars = name, host_vars


def test_the_inventory_variable_overrides_the_run_and_is_checked() -> None:
    run = RebootOptions(policy="always", post_reboot_delay=10)
    assert options_for(run, _Host("A")).post_reboot_delay == 10
    assert options_for(run, _Host("B", kbfix_post_reboot_delay="120")).post_reboot_delay == 120  # INI gives strings
    assert restart_budget(run, _Host("B", kbfix_post_reboot_delay=120)) == 2 + 600 + 120
    with pytest.raises(RebootOptionError, match=r"C: kbfix_post_reboot_delay"):
        check_host_reboot_vars([_Host("A"), _Host("C", kbfix_post_reboot_delay=99999)])


def test_a_host_that_restarts_again_while_settling_is_waited_for() -> None:
    """Servicing that needs a second restart: the readiness check sees another boot time and settles again."""
    old = parse_reboot_state({"last_boot": "2008-08-01T06:00:00Z"})
    first = parse_reboot_state({"last_boot": "2026-01-01T00:00:00Z"})
    second = parse_reboot_state({"last_boot": "2026-01-01T00:05:00Z"})
    down = UnreachableError("refused", host="R")
    probe, mono, sleep = _timeline([down, first, down, second, second])
    record, done = reboot_and_wait(_ReplaySession({"last_boot": "2008-08-01T06:00:00Z"}), probe, "R", _Journal(),
                                   RebootOptions(policy="always", timeout_s=60, pre_reboot_delay=0, poll_s=1,
                                                 post_reboot_delay=5), old.last_boot, monotonic=mono, sleep=sleep)
    assert done.outcome == "success", record.detail
    assert record.boot_after == second.last_boot and record.ready is not None


def test_a_host_that_is_not_ready_after_the_delay_fails_at_the_deadline() -> None:
    old = parse_reboot_state({"last_boot": "2008-08-01T06:00:00Z"})
    new = parse_reboot_state({"last_boot": "2026-01-01T00:00:00Z"})
    probe, mono, sleep = _timeline([new, UnreachableError("refused", host="R")])
    _record, done = reboot_and_wait(_ReplaySession({"last_boot": "2008-08-01T06:00:00Z"}), probe, "R", _Journal(),
                                    RebootOptions(policy="always", timeout_s=10, pre_reboot_delay=0, poll_s=1,
                                                  post_reboot_delay=5), old.last_boot, monotonic=mono, sleep=sleep)
    assert done.outcome == "failed"
    assert "did not answer again after the post-reboot delay of 5 s" in (done.detail or "")


def test_cli_refuses_a_bad_post_reboot_delay_before_contact(tmp_path: Path) -> None:
    inv = unreachable_inventory(tmp_path / "inventory.yaml", host_vars={"WSUS01": {"kbfix_post_reboot_delay": 7200}})
    r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "apply", "--yes"])
    assert r.exit_code == 2 and "WSUS01: kbfix_post_reboot_delay" in r.output, r.output
    unreachable_inventory(inv)
    r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "apply", "--yes",
                                 "--post-reboot-delay", "4000"])
    assert r.exit_code == 2 and "0..3600" in r.output, r.output
