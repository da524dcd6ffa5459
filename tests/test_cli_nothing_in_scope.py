"""`--limit` that selects only hosts the inventory disables (not WinRM): the run says no host was
in scope and exits 3 (nothing done), not 0; the lab host beside it is never contacted."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.exitcodes import HELP
from winlab.fixtures import demo_site
from winlab.lab import Lab


def test_a_limit_matching_only_a_non_winrm_host_exits_3_and_says_so(tmp_path: Path) -> None:
    linux = tmp_path / "linux.ini"
    linux.write_text("[web]\nweb01 ansible_host=127.0.0.1 ansible_connection=ssh\n", encoding="utf-8")
    with Lab([h for h in demo_site() if h.name == "WSUS-SP1"]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        base = ["-i", str(inv), "-i", str(linux), "--state", str(tmp_path / "state")]
        r = CliRunner().invoke(app, [*base, "--limit", "web01", "check"])
        assert r.exit_code == 3, r.output
        assert "no host in scope" in r.output and "web01" in r.output and "nothing was done" in r.output, r.output
        assert lab.records("WSUS-SP1").total_requests == 0
        both = CliRunner().invoke(app, [*base, "--limit", "web01,WSUS-SP1", "check"])
        assert "no host in scope" not in both.output, both.output  # one host in scope: the usual codes
    assert "no host in scope" in HELP  # --help documents it
