"""`kbfix inventory list|graph|check|export`: output, KBFIX_INVENTORY, exit code 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kbfix.cli import app

DATA = Path(__file__).parent / "data" / "inventory"
LAB = DATA / "kbfix" / "lab.yaml"
ANSIBLE = DATA / "ansible"

runner = CliRunner()


def test_list_json_with_limit() -> None:
    result = runner.invoke(app, ["inventory", "list", "-i", str(LAB), "--limit", "lab:!client0[2-3]", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [h["name"] for h in doc["hosts"]] == ["WSUS01", "SCCM01", "client01"]
    assert doc["hosts"][0]["endpoint"]["url"] == "http://127.0.0.1:40123/wsman"
    assert len(doc["digest"]) == 64


def test_list_table_shows_skipped_reason() -> None:
    result = runner.invoke(app, ["inventory", "list", "-i", str(LAB)])
    assert result.exit_code == 0, result.output
    assert "skipped: ansible_connection is ssh, not winrm" in result.output
    assert "WSUS01" in result.output


def test_inventory_from_environment() -> None:
    result = runner.invoke(app, ["inventory", "graph"], env={"KBFIX_INVENTORY": str(ANSIBLE / "nested.yml")})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == (ANSIBLE / "nested.yml.graph.txt").read_text(encoding="utf-8").splitlines()


def test_global_inventory_option_is_used() -> None:
    result = runner.invoke(app, ["-i", str(LAB), "inventory", "check", "--limit", "WSUS01"])
    assert result.exit_code == 0, result.output
    assert "url: http://127.0.0.1:40123/wsman" in result.output
    assert "password: *** (inventory defaults.password)" in result.output
    assert "inventory OK: 1 host(s), 1 over WinRM, 0 skipped" in result.output


def test_check_bad_input_exits_2_with_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("kbfix_inventory: 1\nhosts:\n  A: {prot: 5986}\n", encoding="utf-8")
    result = runner.invoke(app, ["inventory", "check", "-i", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3: hosts.A.prot: unknown key 'prot' (did you mean 'port'?)" in result.output


def test_limit_matching_nothing_exits_2() -> None:
    result = runner.invoke(app, ["inventory", "list", "-i", str(LAB), "--limit", "nosuchhost"])
    assert result.exit_code == 2 and "matches no host or group" in result.output


def test_no_inventory_exits_2() -> None:
    result = runner.invoke(app, ["inventory", "list"], env={"KBFIX_INVENTORY": ""})
    assert result.exit_code == 2 and "no inventory" in result.output


def test_export_round_trips(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inventory", "export", "-i", str(ANSIBLE / "windows_site" / "hosts")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "site.yml"
    out.write_text(result.output, encoding="utf-8")
    listed = runner.invoke(app, ["inventory", "list", "-i", str(out), "--format", "json", "--limit", "sccm"])
    host = json.loads(listed.output)["hosts"][0]
    assert host["name"] == "sccm01.corp.example" and host["endpoint"]["transport"] == "kerberos"
    assert host["roles"] == ["configmgr_site_server"] and host["site"] == "AAR"


def test_help_has_examples() -> None:
    for cmd in ("list", "graph", "check", "export"):
        result = runner.invoke(app, ["inventory", cmd, "--help"])
        assert result.exit_code == 0 and "Examples" in result.output and "kbfix inventory" in result.output
