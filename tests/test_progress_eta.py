"""Issue 14: the live view's time left. The estimator as pure functions (property tests) and the
LiveProgress status line with a scripted clock: `estimating…` until enough hosts finished, then
the observed throughput of the batch applied to the hosts left, hidden once stopping or done."""

from __future__ import annotations

import io
import math
import re

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from kbfix.eta import (
    HOST_BASE_S,
    MIN_DONE,
    PAST_ESTIMATE,
    clock_text,
    eta_text,
    remaining_seconds,
    throughput,
)
from kbfix.progress import LiveProgress
from playbooks.model import ErrorKind, Finding, HostError, HostResult, Status

_elapsed = st.floats(min_value=-10, max_value=1e7) | st.sampled_from([math.nan, math.inf, 0.0])


@given(st.integers(-5, 10_000), _elapsed, st.integers(-5, 100_000))
def test_the_estimate_is_never_negative_and_only_with_enough_hosts(done: int, elapsed: float, left: int) -> None:
    rate = throughput(done, elapsed)
    if done < MIN_DONE or not (0 < elapsed < math.inf and math.isfinite(done / elapsed)):
        assert rate is None
    else:
        assert rate is not None and rate > 0
    seconds = remaining_seconds(left, rate)
    if left <= 0:
        assert seconds == 0
    elif rate is None:
        assert seconds is None
    else:
        assert seconds is not None and seconds >= 0
        # the batch's own pace: its `done` hosts took `elapsed`, so `left` hosts take left/done of it
        assert math.isclose(seconds, elapsed * left / done, rel_tol=1e-9)


@given(st.integers(MIN_DONE, 1000), st.floats(0.001, 1e5), st.integers(1, 10_000))
def test_more_hosts_left_never_means_less_time(done: int, elapsed: float, left: int) -> None:
    rate = throughput(done, elapsed)
    a, b = remaining_seconds(left, rate), remaining_seconds(left + 1, rate)
    assert a is not None and b is not None and b >= a


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_clock_text_never_shows_a_negative_time(seconds: float) -> None:
    text = clock_text(seconds)
    assert "-" not in text and ":" in text
    if math.isfinite(seconds) and seconds > 0:
        assert text != "00:00"  # hosts are still running: a fraction of a second rounds up


def test_eta_text_words() -> None:
    assert eta_text(5, None) == "time left: estimating…"
    assert eta_text(5, 200.2) == "about 03:30 left"          # rounded up to 10 s: no false precision
    assert eta_text(5, 3 * 3600 + 5) == "about 3:01:00 left"  # whole minutes from 10 minutes
    assert eta_text(5, -1.0) == PAST_ESTIMATE                 # used up while hosts still run: no number
    assert eta_text(0, 0.0) is None                  # nothing left: nothing to say
    assert eta_text(5, 200, stopping=True) is None   # a stop makes the figure meaningless


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _result(name: str) -> HostResult:
    return HostResult.from_findings(name, [Finding(advisory="KB954960", status=Status.REMEDIATED, reason="r")])


def _status_line(p: LiveProgress) -> str:
    buf = io.StringIO()
    Console(file=buf, width=300, no_color=True).print(p._render())
    return buf.getvalue()


def test_the_live_view_estimates_from_the_batch_and_hides_when_stopping() -> None:
    clock = _Clock()
    p = LiveProgress(Console(file=io.StringIO(), width=200), clock=clock)
    p.start("apply", 12, 2)
    p.batch(0, 6)
    assert "time left: estimating…" in _status_line(p)
    for i in range(MIN_DONE - 1):
        clock.t += 10
        p.host_done(_result(f"h{i}"))
    assert "estimating…" in _status_line(p)          # two hosts say too little
    clock.t += 10
    p.host_done(_result("h2"))                       # 3 hosts in 30 s: 0.1 host/s, 9 left → 90 s
    assert "about 01:30 left" in _status_line(p)
    clock.t += 15                                    # no host finished meanwhile: the rate holds,
    assert "about 01:20 left" in _status_line(p)     # the 15 s count down: 90 - 15 = 75 → 01:20
    for i in range(3, 6):
        clock.t += 5
        p.host_done(_result(f"h{i}"))                # 6 in 60 s
    p.batch(1, 6)                                    # a new batch: its own pace is not known yet,
    assert "about 01:00 left" in _status_line(p)     # the last batch's (0.1 host/s) stands in: 6 left
    p.stopping("interrupted", 120)
    assert "left" not in _status_line(p).split("·")[-1] and "about" not in _status_line(p)
    p._live.stop()


def test_the_live_view_hides_the_estimate_when_all_hosts_are_done() -> None:
    clock = _Clock()
    p = LiveProgress(Console(file=io.StringIO(), width=200), clock=clock)
    p.start("check", 3, 1)
    p.batch(0, 3)
    for i in range(3):
        clock.t += 1
        p.host_done(_result(f"h{i}"))
    line = _status_line(p)
    assert "done 3/3" in line and "estimating" not in line and "about" not in line
    p._live.stop()


def test_the_time_left_weighs_hosts_by_the_plans_estimates_and_never_rises_while_waiting() -> None:
    """The QA case: the last batch's quick hosts (nothing to install) finish first; one host with a
    60 s installer is left. The host rate said `about 00:05`; the weighted figure covers its install
    and only goes down while nobody finishes."""
    clock = _Clock()
    p = LiveProgress(Console(file=io.StringIO(), width=200), clock=clock)
    p.plan_estimates({**{f"q{i}": 0.0 for i in range(9)}, "slow": 60.0})
    p.start("apply", 10, 1)
    p.batch(0, 10)
    for h in ["slow", *(f"q{i}" for i in range(9))]:
        p.host_step(h, "gather")
    for i in range(9):
        clock.t += 1
        p.host_done(_result(f"q{i}"))                # 9 quick hosts in 9 s
    first = p.eta()
    assert first is not None and first.startswith("about ")
    left_s = 60 + HOST_BASE_S - 9                    # the slow host's planned remainder
    assert _seconds(first) >= left_s, first          # was "about 00:05 left"
    seen = [_seconds(first)]
    for _ in range(12):
        clock.t += 5
        text = p.eta()
        assert text is not None
        if text == PAST_ESTIMATE:
            break
        seen.append(_seconds(text))
    assert seen == sorted(seen, reverse=True), seen  # never rises while no host finishes
    p._live.stop()


def _seconds(text: str) -> int:
    m, s = text.removeprefix("about ").removesuffix(" left").split(":")[-2:]
    return int(m) * 60 + int(s)


def test_finished_host_lines_fit_the_console_cutting_only_the_reason() -> None:
    """QA: lines longer than 80 columns broke mid-word in the live view."""
    out = io.StringIO()
    p = LiveProgress(Console(file=out, width=80, force_terminal=True, no_color=True), clock=_Clock())
    p.start("apply", 2, 1)
    p.batch(0, 2)
    long_host = "WSUS-FRANKFURT-PRIMARY-SITE-SERVER-01.corp.example.com"
    message = "installer KB954960 exit code 1603 (ERROR_INSTALL_FAILURE): see the Windows Installer log " * 3
    p.host_done(HostResult(host=long_host, status=Status.FAILED, error=HostError(kind=ErrorKind.INTERNAL, message=message)))
    p.host_done(HostResult.from_findings("H" * 85, [Finding(advisory="KB954960", status=Status.FAILED, reason="r")]))
    p._live.stop()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # the terminal's control sequences
    lines = [line for line in shown.splitlines() if long_host in line]
    assert len(lines) == 1
    line = lines[0]
    assert len(line) <= 80, line
    assert line.startswith(f"{long_host}  failed  internal: inst") and line.endswith("…"), line
    assert f"{'H' * 85}  failed" in shown  # a name longer than the console is never cut
