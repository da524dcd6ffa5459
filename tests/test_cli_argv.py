"""Global options through click/typer (kbfix.cli_common.with_globals), not an argv rewriter:
`kbfix check -i site.yml` works like `kbfix -i site.yml check`, an option typed after the command
wins over one typed before it, and `-i` on the command line beats KBFIX_INVENTORY (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.cli_common import Globals, merge_globals
from tests.test_run_lab import demo_text
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

HOST = "WSUS-SP1-OK"  # compliant: check exits 0


def _invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(app, args, env=env)
    return r.exit_code, r.output


def test_globals_before_or_after_the_command_reach_the_lab_and_beat_the_env_var(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yml")  # KBFIX_INVENTORY pointing elsewhere must lose to -i
    env = {"KBFIX_INVENTORY": missing}
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab:
        inv = str(lab.write_inventory(tmp_path / "inventory.yaml"))
        state = str(tmp_path / "state")
        for args in (
            ["-i", inv, "--state", state, "--limit", HOST, "check", "--format", "json"],
            ["check", "-i", inv, "--state", state, "--limit", HOST, "--format", "json"],
            ["--limit", "WSUS-*", "check", "--format", "json", "-i", inv, "--state", state, "-l", HOST],  # after wins
        ):
            before = lab.records(HOST).total_requests
            code, out = _invoke(args, env)
            assert code == 0, (args, out)
            doc = json.loads(out[out.index("{"):])
            assert [h["name"] for h in doc["hosts"]] == [HOST], args
            assert lab.records(HOST).total_requests > before  # contacted through the lab
        assert lab.records("WSUS-SP1").total_requests == 0  # --limit after the command was honoured
        # The env var alone is used when no -i is given: its (missing) file is named, nothing sent.
        code, out = _invoke(["check", "--state", state], env)
        assert code == 2 and "missing.yml" in out


def test_inventory_group_takes_i_and_beats_the_env_var(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("kbfix_inventory: 1\nhosts:\n  GOOD01: {address: 127.0.0.1, port: 5985, username: u, "
                    "password: p, transport: ntlm, scheme: http}\n", encoding="utf-8")
    other = tmp_path / "other.yml"
    other.write_text("kbfix_inventory: 1\nhosts:\n  OTHER01: {address: 127.0.0.1, port: 5985}\n", encoding="utf-8")
    env = {"KBFIX_INVENTORY": str(other)}
    for args in (["inventory", "check", "-i", str(good)], ["-i", str(good), "inventory", "check"],
                 ["-i", str(good), "inventory", "export"], ["inventory", "list", "-i", str(good), "--format", "json"]):
        code, out = _invoke(args, env)
        assert code == 0, (args, out)
        assert "GOOD01" in out and "OTHER01" not in out, args
    code, out = _invoke(["inventory", "check"], env)  # nothing typed: the env var's inventory
    assert code == 0 and "OTHER01" in out


@pytest.mark.parametrize("cmd", [[], ["ping"], ["check"], ["plan"], ["apply"], ["history"], ["show"], ["report"],
                                 ["demo"], ["unlock"], ["inventory", "check"], ["inventory", "list"]])
def test_help_is_clean(cmd: list[str]) -> None:
    code, out = _invoke([*cmd, "--help"])
    assert code == 0
    assert "<bool>" not in out and "<list[Path]>" not in out, out
    options = out[out.index("Options:"):]
    assert options.count("KBFIX_INVENTORY") <= 1 and options.count("KBFIX_STATE") <= 1, out  # env var named once
    assert "-i, --inventory FILE" in out or (cmd == ["unlock"] and "--inventory" in out)


def test_console_script_accepts_inventory_after_the_command(tmp_path: Path) -> None:
    """Through the installed entry point (pyproject's `kbfix = kbfix.cli:app`): a bad inventory after
    `check` is read (exit 2 naming it), not refused as an unknown option."""
    bad = tmp_path / "bad.yml"
    bad.write_text("kbfix_inventory: 1\nhostz: {}\n", encoding="utf-8")
    exe = Path(sys.executable).with_name("kbfix")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from kbfix.cli import app; app(prog_name='kbfix')"]
    proc = subprocess.run([*cmd, "check", "-i", str(bad), "--state", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "bad.yml" in proc.stderr and "No such option" not in proc.stderr


_VALUES = st.fixed_dictionaries({
    "g_inventory": st.one_of(st.none(), st.lists(st.sampled_from([Path("a.yml"), Path("b.ini")]), max_size=2)),
    "g_limit": st.one_of(st.none(), st.sampled_from(["wsus*", "site_a:&wsus"])),
    "g_forks": st.one_of(st.none(), st.integers(1, 200)),
    "g_state": st.one_of(st.none(), st.just(Path("/tmp/kbfix-state"))),
    "g_verbose": st.integers(0, 3),
    "g_quiet": st.booleans(),
    "g_no_color": st.booleans(),
    "g_host_timeout": st.one_of(st.none(), st.floats(1, 1e4)),
})


@given(_VALUES)
def test_options_after_the_command_override_those_before(after: dict[str, object]) -> None:
    before = Globals([Path("env.yml")], "old", 20, Path("/s"), 1, False, False, 600.0)
    ctx = SimpleNamespace(obj=before, find_object=lambda _t: ctx.obj)
    g = merge_globals(ctx, dict(after))
    assert g.inventory == (after["g_inventory"] or [Path("env.yml")])
    assert g.limit == (after["g_limit"] if after["g_limit"] is not None else "old")
    assert g.forks == (after["g_forks"] if after["g_forks"] is not None else 20)
    assert g.state == (after["g_state"] or Path("/s"))
    assert g.host_timeout == (after["g_host_timeout"] if after["g_host_timeout"] is not None else 600.0)
    assert g.verbose == 1 + after["g_verbose"]  # type: ignore[operator]
    assert (g.quiet, g.no_color) == (after["g_quiet"], after["g_no_color"])
