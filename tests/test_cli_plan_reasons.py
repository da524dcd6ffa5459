"""The plan says on screen why a host has nothing to do, grouped with counts (issue 14), and a
reviewer reads the plan through `kbfix show RUN` / `kbfix report RUN --format md`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab


def _groups(output: str) -> dict[str, tuple[int, list[str]]]:
    """`  N  reason` followed by `       host, host` lines after `nothing to do on K host(s):`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("nothing to do on "))
    out: dict[str, tuple[int, list[str]]] = {}
    i = start + 1
    while i + 1 < len(lines) and (m := re.match(r"^\s+(\d+)  (.+)$", lines[i])):
        out[m.group(2)] = (int(m.group(1)), lines[i + 1].strip().split(", "))
        i += 2
    return out


def test_plan_without_packages_says_why_each_host_has_nothing_to_do(tmp_path: Path) -> None:
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab:
        base = ["-i", str(lab.write_inventory(tmp_path / "inv.yaml")), "--state", str(tmp_path / "state")]
        r = CliRunner().invoke(app, [*base, "plan", "-o", str(tmp_path / "plan.json")])
        assert r.exit_code == 4, r.output
        groups = _groups(r.output)
        assert "nothing to do on 12 host(s):" in r.output
        missing = groups["KB954960: package for KB954960 missing (no packages directory given): add it to the packages manifest"]
        assert missing == (5, ["WSUS-SP1", "WSUS-DK", "WSUS-DE", "WSUS-NL", "WSUS-CN"])
        assert groups["compliant"] == (2, ["WSUS-SP1-OK", "CM07-OK"])
        assert groups["unreachable while planning: see `kbfix show RUN` for the error"] == (1, ["WSUS-DOWN"])
        assert groups["failed while planning (auth): see `kbfix show RUN` for the error"] == (1, ["WSUS-LOCKED"])
        assert any(hosts == ["OFFICE-CL01"] and "WSUS server" in why for why, (_n, hosts) in groups.items())
        assert sum(n for n, _h in groups.values()) == 12
        assert "nothing to do (non_compliant)" not in r.output  # the old reason-less line

        # With the packages the installs are planned; only the reasons that remain are listed.
        r = CliRunner().invoke(app, [*base, "plan", "--packages", str(make_packages(tmp_path / "p")),
                                     "-o", str(tmp_path / "plan.json")])
        groups = _groups(r.output)
        assert not any("package for" in why for why in groups), r.output

        # A reviewer reads the plan from the store, not the raw JSON.
        run_id = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))["run_id"]
        r = CliRunner().invoke(app, [*base, "show", run_id])
        assert "install_package" in r.output and run_id in r.output, r.output
        r = CliRunner().invoke(app, [*base, "report", run_id, "--format", "md"])
        assert r.exit_code == 0 and "WSUS-DK" in r.output and "| Kind | plan |" in r.output, r.output
