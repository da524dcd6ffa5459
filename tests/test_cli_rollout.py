"""Rollouts an operator can trust, through the CLI and the lab (issue 14):

- the README's apply command (`--serial 1,10%,100% --max-fail-percent 10`) on the demo site, with
  its client that kbfix never fixes, finishes every batch (only failed/unreachable/unknown hosts
  count toward max-fail, and the demo's two broken hosts sit in the last batch);
- a max-fail stop on a real failure (installer exit 1603), then `apply --resume latest` continues
  in the same batches with the same max-fail, window and packages; an option given on the resume
  command line overrides and is recorded.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.store import AuditStore
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

SERVERS = ["WSUS-SP1", "WSUS-RTM", "CM07-SITE", "WSUS-DK", "WSUS-DE", "WSUS-NL", "WSUS-CN"]


def _window() -> str:
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    return f"{start:%Y-%m-%dT%H:%M:%S}Z/PT4H"


def _batches(output: str) -> list[list[str]]:
    """The hosts run under each `batch N: K host(s)` header of the plain progress lines (hosts
    skipped by a stop are left out: they belong to no batch that ran)."""
    out: list[list[str]] = []
    for line in output.splitlines():
        if re.match(r"batch \d+: \d+ host\(s\)$", line):
            out.append([])
        elif line.startswith("linked to their WSUS server"):  # relinked after the batches: no batch's
            break
        elif out and "\t" in line and "\tskipped\t" not in line:
            out[-1].append(line.split("\t", 1)[0])
    return out


def _statuses(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^([A-Z0-9-]+)\t(\w+)\t", output, flags=re.M)}


def test_readme_apply_command_finishes_every_batch_on_the_demo_site(tmp_path: Path) -> None:
    pkgs = make_packages(tmp_path / "pkgs")
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab:
        base = ["-i", str(lab.write_inventory(tmp_path / "inv.yaml")), "--state", str(tmp_path / "state")]
        r = CliRunner().invoke(app, [*base, "plan", "--packages", str(pkgs), "-o", str(tmp_path / "plan.json")])
        assert r.exit_code in (3, 4), r.output
        r = CliRunner().invoke(app, [*base, "apply", "--plan", str(tmp_path / "plan.json"), "--packages", str(pkgs),
                                     "--window", _window(), "--serial", "1,10%,100%", "--max-fail-percent", "10",
                                     "-r", str(tmp_path / "after.html")])
        assert r.exit_code == 4, r.output  # WSUS-DOWN and WSUS-LOCKED fail, as the demo means them to
        layout = _batches(r.output)
        assert [len(b) for b in layout] == [1, 1, 11], r.output  # 13 hosts: 1, 10 % of 13 (Ansible: at least 1), the rest
        statuses = _statuses(r.output)
        assert "max_fail" not in r.output and "skipped" not in statuses.values(), r.output
        # reported, never counted as failed; its last line follows its server WSUS-SP1 (remediated)
        assert statuses["OFFICE-CL01"] == "remediated", r.output
        assert all(statuses[h] in ("remediated", "mitigated") for h in SERVERS), statuses
        assert (tmp_path / "after.html").is_file()


def test_max_fail_stop_then_resume_keeps_the_same_rollout(tmp_path: Path) -> None:
    pkgs = make_packages(tmp_path / "pkgs")
    lab_hosts = load_host_fixture_text(demo_text(fail_host="WSUS-DK", time_scale=0.05), "demo", DEMO_SITE.parent)
    window = _window()
    with Lab(lab_hosts) as lab:
        base = ["-i", str(lab.write_inventory(tmp_path / "inv.yaml")), "--state", str(tmp_path / "state"),
                "--limit", ":".join(SERVERS)]
        r = CliRunner().invoke(app, [*base, "apply", "--yes", "--packages", str(pkgs), "--window", window,
                                     "--serial", "1,3,100%", "--max-fail-percent", "10"])
        assert r.exit_code == 4, r.output
        first = _batches(r.output)
        assert [sorted(b) for b in first] == [["WSUS-SP1"], ["CM07-SITE", "WSUS-DK", "WSUS-RTM"]], r.output
        statuses = _statuses(r.output)
        assert statuses["WSUS-DK"] == "failed"  # installer 1603
        assert all(statuses[h] == "skipped" for h in ("WSUS-DE", "WSUS-NL", "WSUS-CN")) and "max_fail" in r.output

        # Resume with no rollout option: the same batches ([DK] then [DE, NL, CN]), the same max-fail
        # (DK fails again: stop), the same window and packages, all said before it starts.
        r = CliRunner().invoke(app, [*base, "apply", "--resume", "latest"])
        assert r.exit_code == 4, r.output
        assert "resuming apply run" in r.output and "--max-fail-percent 10.0 (carried)" in r.output, r.output
        assert "--serial 1,3,100% (carried)" in r.output and f"--packages {pkgs} (carried)" in r.output
        # the batches are the first run's, but only its unfinished hosts run (not all 7 again)
        assert "same 3 batch(es) as that run (1, 3, 3 host(s)), holding only the hosts it left unfinished" in r.output
        assert _batches(r.output) == [["WSUS-DK"]], r.output  # stopped again after DK's batch
        again = _statuses(r.output)
        assert again["WSUS-DK"] == "failed"
        assert all(again[h] == "skipped" for h in ("WSUS-DE", "WSUS-NL", "WSUS-CN")), again
        assert all(lab.records(h).mutations == [] for h in ("WSUS-DE", "WSUS-NL", "WSUS-CN"))

        # An explicit option on the resume command line wins and is recorded; the batches stay.
        r = CliRunner().invoke(app, [*base, "apply", "--resume", "latest", "--max-fail-percent", "100"])
        assert r.exit_code == 4, r.output  # DK still fails
        assert "--max-fail-percent 100.0 (from the command line)" in r.output
        last = _batches(r.output)
        assert last[0] == ["WSUS-DK"] and sorted(last[1]) == ["WSUS-CN", "WSUS-DE", "WSUS-NL"], r.output
        done = _statuses(r.output)
        assert all(done[h] == "remediated" for h in ("WSUS-DE", "WSUS-NL", "WSUS-CN")), done  # packages carried
    with AuditStore.in_dir(tmp_path / "state") as store:
        runs = [r for r in store.list_runs() if r.kind == "apply"]  # newest first
        original, resumed = runs[-1], runs[0]
        assert len(runs) == 3
        assert resumed.options["resumed_settings"]["overridden"] == ["max_fail_percent"]
        assert set(resumed.options["resumed_settings"]["carried"]) == {"serial", "window", "packages"}
        assert resumed.options["max_fail_percent"] == 100
        assert resumed.options["batches"] == original.options["batches"]
        assert resumed.window == original.window


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    pkgs = make_packages(tmp_path / "pkgs")
    lab_hosts = load_host_fixture_text(demo_text(fail_host="WSUS-DK", time_scale=0.05), "demo", DEMO_SITE.parent)
    with Lab(lab_hosts) as lab:
        base = ["-i", str(lab.write_inventory(tmp_path / "inv.yaml")), "--state", str(tmp_path / "state"),
                "--limit", ":".join(SERVERS)]
        for args, code, summary in (
            (["check", "-q"], 3, r"kbfix check \S+: 7 host\(s\): non_compliant 7"),
            (["-q", "plan", "--packages", str(pkgs), "-o", str(tmp_path / "plan.json")], 3,
             r"kbfix plan \S+: 7 host\(s\): non_compliant 7"),
            (["apply", "-q", "--yes", "--packages", str(pkgs), "--serial", "1,3,100%", "--max-fail-percent", "10"], 4,
             r"kbfix apply \S+ \(completed\): 7 host\(s\): remediated 2 · mitigated 1 · skipped 3 · failed 1"),
        ):
            r = CliRunner().invoke(app, [*base, *args])
            assert r.exit_code == code, r.output
            assert len(r.output.splitlines()) == 1 and re.fullmatch(summary, r.output.strip()), r.output
