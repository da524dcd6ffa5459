"""`kbfix demo` end to end: the README's first command, through real WinRM to the lab."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.demo import load_expectations


def test_demo_runs_the_whole_job_and_every_host_ends_as_intended(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = load_expectations()
    for host, want in expected.items():
        line = next(ln for ln in result.output.splitlines() if ln.startswith(host + " "))
        assert line.split()[1:] == [want["check"], want["final"]]
    # A newcomer sees `failed` and `unreachable` next to exit 0: the output says they are built so.
    verdict = next(ln for ln in result.output.splitlines() if ln.startswith("as intended:"))
    assert "WSUS-DOWN (unreachable)" in verdict and "WSUS-LOCKED (failed)" in verdict, verdict
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert {h["name"] for h in doc["hosts"]} == set(expected)
    assert doc["run"]["kind"] == "apply"
    # Hosts that could not be assessed when the plan was made are reported as found, with the
    # reason, never as "skipped" (which the compliance figure leaves out).
    by_name = {h["name"]: h for h in doc["hosts"]}
    assert by_name["WSUS-DOWN"]["status"] == "unreachable" and "refused" in by_name["WSUS-DOWN"]["error"]["message"]
    assert by_name["WSUS-LOCKED"]["status"] == "failed" and by_name["WSUS-LOCKED"]["error"]["kind"] == "auth"
    assert doc["summary"]["by_status"]["skipped"] == 0 and doc["summary"]["compliance_percent"] < 100
    # A host with nothing to do keeps the roles and OS the plan found.
    assert by_name["CM07-OK"]["roles"] == ["configmgr_site_server"] and by_name["WSUS-SP1-OK"]["os"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "WSUS-RTM" in html and "<script src=" not in html
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert sum(len(p["planned"]) for h in plan["hosts"] for p in h["findings"]) > 0
    # The lab account's password never reaches the output folder.
    for path in out.rglob("*"):
        if path.is_file():
            assert b"Secret-1" not in path.read_bytes(), path
