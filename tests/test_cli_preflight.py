"""Every option is validated before any host is contacted (issue 14): each bad option below exits
2 with a line naming it, and the lab counts zero requests; a window that opens later is waited
for only with --wait-for-window (countdown, Ctrl-C stops)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.preflight import check_window, human_duration, wait_for_window
from kbfix.window import ChangeWindow, parse_window
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

HOST = "WSUS-SP1"


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _total_requests(lab: Lab) -> int:
    return sum(lab.records(name).total_requests for name in lab.server.listeners)


@pytest.fixture(scope="module")
def lab() -> Lab:
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as running:
        yield running  # type: ignore[misc]


def test_every_bad_option_exits_2_with_nothing_sent(lab: Lab, tmp_path: Path) -> None:
    inv = lab.write_inventory(tmp_path / "inventory.yaml")
    pkgs = make_packages(tmp_path / "pkgs")
    bad_pkgs = make_packages(tmp_path / "badpkgs")
    (bad_pkgs / "manifest.yaml").write_text("packages:\n  - kb: KB954960\n    file: missing.exe\n", encoding="utf-8")
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    now = datetime.now(timezone.utc)
    later = f"{_iso(now + timedelta(hours=29))}/PT4H"
    ended = f"{_iso(now - timedelta(hours=5))}/PT4H"
    base = ["-i", str(inv), "--state", str(tmp_path / "state"), "--limit", HOST]
    apply = [*base, "apply", "--yes", "--packages", str(pkgs)]
    cases = [
        ([*base, "check", "-r", str(tmp_path / "out.docx")], "out.docx"),
        ([*base, "check", "--lang", "fr"], "--lang 'fr'"),
        ([*base, "check", "-r", str(tmp_path / "no-such-dir" / "r.html")], "does not exist"),
        ([*base, "plan", "-o", str(tmp_path / "a-file" / "plan.json")], "-o/--output"),
        ([*base, "plan", "-r", str(tmp_path / "r.pdf2")], "r.pdf2"),
        ([*apply, "--window", "tomorrow evening"], "tomorrow evening"),
        ([*apply, "--window", ended], "ended 1 h ago"),
        ([*apply, "--window", later], "opens in 29 h"),
        ([*apply, "--report", str(tmp_path / "x.docx")], "x.docx"),
        ([*apply, "--lang", "fr"], "--lang"),
        ([*base, "apply", "--yes", "--packages", str(bad_pkgs)], "manifest.yaml:2: field sha256"),
        ([*base, "apply", "--plan", str(tmp_path / "garbage.json")], "garbage.json"),
        ([*base, "apply", "--plan", str(tmp_path / "nope.json")], "nope.json"),
        ([*apply, "--serial", "0"], "--serial"),
    ]
    for args, needle in cases:
        before = _total_requests(lab)
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output, (args, r.output)
        assert "internal error" not in r.output
        assert _total_requests(lab) == before, args  # not one HTTP request reached the lab


def test_wait_for_window_waits_then_runs(lab: Lab, tmp_path: Path) -> None:
    inv = lab.write_inventory(tmp_path / "inventory.yaml")
    opens = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    args = ["-i", str(inv), "--state", str(tmp_path / "state"), "--limit", "WSUS-SP1-OK",
            "apply", "--yes", "--window", f"{_iso(opens)}/PT1H"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "opens in" in r.output  # without --wait-for-window: refused
    before = lab.records("WSUS-SP1-OK").total_requests
    started = time.monotonic()
    r = CliRunner().invoke(app, [*args, "--wait-for-window"])
    assert "waiting for the change window" in r.output and "(Ctrl-C to stop)" in r.output, r.output
    assert datetime.now(timezone.utc) >= opens and time.monotonic() - started >= 1
    assert r.exit_code == 0, r.output  # compliant: nothing to apply
    assert lab.records("WSUS-SP1-OK").total_requests > before  # contacted only after the wait


def test_wait_is_interruptible_and_counts_down() -> None:
    start = datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)
    win = ChangeWindow(start, start + timedelta(hours=4))
    now = [start - timedelta(seconds=125)]
    lines: list[str] = []

    def sleep(s: float) -> None:
        now[0] += timedelta(seconds=s)
        if now[0] >= start - timedelta(seconds=3):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_window(win, lines.append, clock=lambda: now[0], sleep=sleep, every_s=0.0)
    assert lines[0].endswith("opens in 2 min (Ctrl-C to stop)")
    assert any("opens in 5 s" in line for line in lines)


def test_window_checks() -> None:
    win = parse_window("2026-11-28T22:00:00+01:00/PT4H")
    assert check_window(win, wait=False, now=win.start + timedelta(minutes=1)) == 0
    assert check_window(win, wait=True, now=win.start - timedelta(hours=29)) == 29 * 3600


@given(st.floats(0, 10 * 86400))
def test_human_duration_is_short_and_monotone_in_unit(seconds: float) -> None:
    text = human_duration(seconds)
    assert text.split()[-1] in ("s", "min", "h", "d") and len(text) <= 12
