"""Global options typed after the command are moved before it (kbfix/argv.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kbfix.argv import GLOBAL_FLAGS, GLOBAL_WITH_VALUE, hoist_globals


def test_globals_after_the_command_move_before_it() -> None:
    assert hoist_globals(["check", "-i", "site.yml", "--limit", "wsus*", "-r", "out.html"]) == [
        "-i", "site.yml", "--limit", "wsus*", "check", "-r", "out.html"]
    assert hoist_globals(["apply", "--plan", "p.json", "--forks=50", "-vv", "--yes"]) == [
        "--forks=50", "-vv", "apply", "--plan", "p.json", "--yes"]
    # already in front, or a value that looks like a command name: unchanged
    assert hoist_globals(["-i", "check", "check"]) == ["-i", "check", "check"]
    assert hoist_globals(["-q", "plan", "-o", "plan.json"]) == ["-q", "plan", "-o", "plan.json"]


def test_lab_and_inventory_groups_keep_their_own_options() -> None:
    assert hoist_globals(["inventory", "list", "-i", "a.ini", "-l", "x"]) == ["inventory", "list", "-i", "a.ini", "-l", "x"]
    assert hoist_globals(["lab", "up", "-i", "inv.yaml"]) == ["lab", "up", "-i", "inv.yaml"]


def test_double_dash_and_missing_value_are_left_alone() -> None:
    assert hoist_globals(["report", "--", "-i"]) == ["report", "--", "-i"]
    assert hoist_globals(["check", "-i"]) == ["check", "-i"]


@given(st.lists(st.sampled_from(["check", "-i", "x.yml", "-v", "-q", "--limit", "a", "-r", "o.html", "--", "plan"]),
                max_size=12))
def test_hoisting_keeps_every_token(argv: list[str]) -> None:
    out = hoist_globals(argv)
    assert sorted(out) == sorted(argv)
    if "--" in argv:
        tail = argv[argv.index("--"):]
        assert out[-len(tail):] == tail
    assert GLOBAL_FLAGS.isdisjoint({"check", "plan"}) and "-r" not in GLOBAL_WITH_VALUE


def test_console_script_accepts_inventory_after_the_command(tmp_path: Path) -> None:
    """Through the installed entry point: a bad inventory after `check` is read (exit 2 naming it),
    not refused as an unknown option."""
    bad = tmp_path / "bad.yml"
    bad.write_text("kbfix_inventory: 1\nhostz: {}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", "from kbfix.argv import run; run()", "check", "-i", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "bad.yml" in proc.stderr and "No such option" not in proc.stderr
