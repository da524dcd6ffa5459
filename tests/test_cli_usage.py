"""CLI usage and configuration errors (exit 2), help texts, history/show on a store; no hosts contacted."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbfix import __version__
from kbfix.cli import app
from kbfix.run import RunOptions, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from tests.helpers import unreachable_inventory

COMMANDS = ["ping", "check", "plan", "apply", "history", "show", "report"]

@pytest.fixture
def inv(tmp_path: Path) -> Path:
    return unreachable_inventory(tmp_path / "inventory.yaml")


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_help_has_an_example_and_exit_codes(cmd: str) -> None:
    code, out = _run(cmd, "--help")
    assert code == 0
    assert "Example" in out and "Exit codes" in out


def test_version() -> None:
    assert _run("--version") == (0, f"kbfix {__version__}\n")


def test_usage_errors_exit_2_before_any_connection(inv: Path, tmp_path: Path) -> None:
    base = ["-i", str(inv), "--state", str(tmp_path / "s")]
    cases = [
        ([*base, "apply"], "--yes"),  # not interactive, no plan
        ([*base, "apply", "--plan", "p.json", "--resume", "x"], "cannot be combined"),
        ([*base, "apply", "--window", "tomorrow", "--yes"], "tomorrow"),
        ([*base, "apply", "--window", "2026-11-28T22:00/PT1H", "--yes"], "offset"),
        ([*base, "apply", "--serial", "0", "--yes"], "--serial"),
        ([*base, "apply", "--plan", str(tmp_path / "missing.json")], "missing.json"),
        ([*base, "check", "--format", "xml"], "--format"),
        (["--state", str(tmp_path / "s"), "check"], "no inventory"),
        ([*base, "show", "nope"], "not found"),
        ([*base, "apply", "--resume", "nope"], "not found"),
    ]
    for args, needle in cases:
        code, out = _run(*args)
        assert code == 2, (args, out)
        assert needle in out, (args, out)


def test_bad_inventory_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kbfix_inventory: 1\nhosts:\n  WSUS01: {address: 127.0.0.1, port: 99999}\n", encoding="utf-8")
    code, out = _run("-i", str(bad), "--state", str(tmp_path / "s"), "check")
    assert code == 2 and "bad.yaml" in out


def test_inventory_from_environment_and_named_window(inv: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text('windows:\n  past: "2020-01-01T00:00:00Z/PT1H"\n  open: "2020-01-01T00:00:00Z/2120-01-01T00:00:00Z"\n',
                   encoding="utf-8")
    env = {"KBFIX_INVENTORY": str(inv), "KBFIX_STATE": str(tmp_path / "s"), "KBFIX_CONFIG": str(cfg)}
    # A hand-written plan (no inventory digest, never recorded by a plan run of this store) is refused.
    (tmp_path / "forged.json").write_text(
        '{"run_id": "r", "created": "2026-01-01T00:00:00Z", "kbfix_version": "0", "hosts": []}', encoding="utf-8")
    code, out = _run("-q", "apply", "--plan", str(tmp_path / "forged.json"), "--window", "open", env=env)
    assert code == 2 and "not a plan recorded in the audit store" in out, out
    # An empty plan made by a plan run of this store (over no hosts).
    with AuditStore.in_dir(tmp_path / "s") as store:
        made = run_plan([], PlaybookEngine(), store, RunOptions())
    assert made.plan is not None
    made.plan.write(tmp_path / "plan.json")
    code, out = _run("-q", "apply", "--plan", str(tmp_path / "plan.json"), "--window", "past", env=env)
    assert code == 2 and "ended" in out, out  # a window entirely in the past: refused before anything runs
    code, out = _run("-q", "apply", "--plan", str(tmp_path / "plan.json"), "--window", "open", env=env)
    assert code == 3, out  # WSUS01 is not in the (empty) plan: skipped, nothing contacted
    code, out = _run("-q", "apply", "--plan", str(tmp_path / "plan.json"), "--window", "future", env=env)
    assert code == 2 and "past" in out  # unknown name: the known ones are listed
    code, out = _run("history", "--format", "json", env=env)
    assert code == 0 and '"kind": "apply"' in out and '"window": "2020-01-01T00:00:00Z/2120-01-01T00:00:00Z"' in out
    code, out = _run("show", "latest", env=env)
    assert code == 3 and "not_in_plan" in out
