"""Change windows: ISO 8601 intervals and durations, named windows, can_start."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbfix.window import ChangeWindow, WindowError, parse_duration, parse_window

T0 = datetime(2026, 11, 28, 21, 0, tzinfo=timezone.utc)


def test_start_end_and_duration_forms_agree() -> None:
    a = parse_window("2026-11-28T22:00:00+01:00/2026-11-29T02:00:00+01:00")
    b = parse_window("2026-11-28T21:00:00Z/PT4H")
    assert a == b
    assert str(a) == "2026-11-28T21:00:00Z/2026-11-29T01:00:00Z"


def test_named_window_and_now() -> None:
    w = parse_window("sat", named={"sat": "2026-11-28T21:00:00Z/PT1H"})
    assert w.start == T0
    n = parse_window("now/PT10M", now=T0)
    assert (n.start, n.end) == (T0, T0 + timedelta(minutes=10))
    with pytest.raises(WindowError, match="sat"):
        parse_window("sun", named={"sat": "x/y"})


@pytest.mark.parametrize("bad", ["2026-11-28T22:00:00/PT1H", "2026-11-28T22:00:00Z/P1Y",
                                 "2026-11-28T22:00:00Z/2026-11-28T21:00:00Z", "tomorrow", "x/PT1H"])
def test_bad_windows_are_refused(bad: str) -> None:
    with pytest.raises(WindowError):
        parse_window(bad)


def test_can_start_respects_expected_duration() -> None:
    w = ChangeWindow(T0, T0 + timedelta(hours=1))
    assert not w.can_start(T0 - timedelta(seconds=1))
    assert w.can_start(T0, 3600)
    assert not w.can_start(T0 + timedelta(minutes=59), 120)
    assert w.can_start(T0 + timedelta(minutes=58), 120)
    assert not w.can_start(T0 + timedelta(hours=1))
    assert w.remaining(T0 + timedelta(minutes=30)) == 1800


@given(d=st.integers(0, 30), h=st.integers(0, 23), m=st.integers(0, 59), s=st.integers(0, 59))
def test_duration_roundtrip(d: int, h: int, m: int, s: int) -> None:
    text = f"P{d}DT{h}H{m}M{s}S"
    assert parse_duration(text) == timedelta(days=d, hours=h, minutes=m, seconds=s)
