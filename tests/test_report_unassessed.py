"""A host kbfix could not assess (unreachable, credentials refused) is unknown for every advisory:
the report's per-advisory rows must count it, not show `100 %, 0 failures` for an advisory while
two servers were never read (what the auditor's "By advisory" table said before)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app
from winlab.fixtures import demo_site
from winlab.lab import Lab

HOSTS = ["WSUS-SP1-OK", "CM07-OK", "WSUS-DOWN", "WSUS-LOCKED"]  # compliant, compliant, unreachable, 401


def test_unassessed_hosts_count_under_every_advisory(tmp_path: Path) -> None:
    with Lab([h for h in demo_site() if h.name in HOSTS]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        report = tmp_path / "check.json"
        r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "check", "-r", str(report)])
    assert r.exit_code == 4, r.output  # some host unreachable or failed
    summary = json.loads(report.read_text(encoding="utf-8"))["summary"]
    per = {a["id"]: a for a in summary["per_advisory"]}
    assert set(per) == {"KB954474", "KB954960"}
    for adv in per.values():
        assert adv["by_status"]["unreachable"] == 1 and adv["by_status"]["failed"] == 1, adv
        assert adv["failures"] == 2, adv
        assert adv["compliance_percent"] == round(100 / 3, 2), adv  # 1 compliant of 3 counted: the other two unknown
    # the overall figure keeps its documented unit: such a host counts once, not once per advisory
    assert summary["by_status"]["unreachable"] == 1 and summary["by_status"]["failed"] == 1
    assert summary["failures"] == 2


def test_source_links_keep_their_closing_parenthesis(tmp_path: Path) -> None:
    """learn.microsoft.com URLs end in `(v=vs.85)`: the link must keep the `)` and its label must
    not carry the leftover `<)` (the HTML and Markdown reports showed `IUpdate.Decline <)`)."""
    with Lab([h for h in demo_site() if h.name == "WSUS-SP1-OK"]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        args = ["-i", str(inv), "--state", str(tmp_path / "state"), "check"]
        r = CliRunner().invoke(app, [*args, "-r", str(tmp_path / "r.html"), "-r", str(tmp_path / "r.md")])
    assert r.exit_code == 0, r.output
    decline = "https://learn.microsoft.com/previous-versions/windows/desktop/ms747138(v=vs.85)"
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert f'href="{decline}"' in html, html
    assert "IUpdate.Decline</a>" in html
    assert f"IUpdate.Decline: {decline}" in md
    assert "&lt;)" not in html + md and "<)" not in html + md


def test_html_host_row_of_an_unassessed_host_fills_every_advisory_cell(tmp_path: Path) -> None:
    """The hosts table: an unreachable host's advisory cells read `Unreachable`, not blank (a blank
    cell beside `KB954960` read as "nothing to report")."""
    with Lab([h for h in demo_site() if h.name in ("WSUS-SP1-OK", "WSUS-DOWN")]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "check",
                                     "-r", str(tmp_path / "r.html")])
    assert r.exit_code == 4, r.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    row = next(line for line in html.splitlines() if line.startswith('<tr data-s="unreachable">'))
    cells = row.split("<td")[7:]  # after host, address, site, roles, OS, status
    assert len(cells) == 2 and all('<span class="s s-unreachable">' in c for c in cells), row
