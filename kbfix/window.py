"""Change windows: when apply may start mutating work.

`--window` takes an ISO 8601 time interval with UTC offsets — `START/END` or `START/DURATION`
(e.g. `2026-11-28T22:00:00+01:00/PT4H`; `now` is accepted as START) — or the name of a window
in the config file. Apply starts a host only when `can_start(now, expected_seconds)`: inside the
window and with its expected duration (the plan's estimates) ending before the window closes.
A host already mid-install is never cut off: the window gates starts, not running ops.
Source for the notation: ISO 8601-1:2019 §5.5 (time intervals) and §5.5.2.4 (durations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from playbooks.model import utc_now

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$"
)


class WindowError(ValueError):
    """A window that cannot be parsed or makes no sense (end before start, no UTC offset)."""


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration of weeks/days/hours/minutes/seconds (`PT2H`, `P1DT30M`, `PT90S`).

    Years and months are refused (their length depends on the calendar). Raises WindowError.
    """
    m = _DURATION.match(text.strip().upper())
    if not m:
        raise WindowError(f"{text!r}: not an ISO 8601 duration such as PT2H or P1DT30M")
    g = {k: float((v or "0").replace(",", ".")) for k, v in m.groupdict().items()}
    return timedelta(weeks=g["w"], days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def parse_instant(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 date-time with a UTC offset (`Z` or `+01:00`), or `now`. Raises WindowError.

    A time without an offset is refused: the controller and the servers may sit in different
    time zones, and a change window must mean the same instant to everyone.
    """
    text = text.strip()
    if text.lower() == "now":
        return (now or utc_now()).astimezone(timezone.utc)
    try:
        value = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise WindowError(f"{text!r}: not an ISO 8601 date-time (e.g. 2026-11-28T22:00:00+01:00)") from exc
    if value.tzinfo is None:
        raise WindowError(f"{text!r}: add a UTC offset (Z or +01:00) so the window means one instant")
    return value


@dataclass(frozen=True)
class ChangeWindow:
    """A half-open interval [start, end) of aware datetimes during which work may start."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise WindowError(f"window ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")

    def contains(self, now: datetime) -> bool:
        """True when `now` is inside the window."""
        return self.start <= now < self.end

    def can_start(self, now: datetime, expected_seconds: float = 0.0) -> bool:
        """True when work expected to take `expected_seconds` may start at `now`: inside the
        window and finishing no later than its end."""
        return self.contains(now) and now + timedelta(seconds=max(0.0, expected_seconds)) <= self.end

    def remaining(self, now: datetime) -> float:
        """Seconds until the window closes (0 when closed or not yet open)."""
        return max(0.0, (self.end - now).total_seconds()) if now >= self.start else 0.0

    def __str__(self) -> str:
        """ISO 8601 `start/end` in UTC, as stored in RunInfo.window."""
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return f"{self.start.astimezone(timezone.utc):{fmt}}/{self.end.astimezone(timezone.utc):{fmt}}"


def parse_window(
    text: str, *, named: Mapping[str, str] | None = None, now: datetime | None = None
) -> ChangeWindow:
    """`START/END`, `START/DURATION` or a name from `named` (whose value is one of those).

    Raises WindowError naming the accepted forms (and the known names) on bad input.
    """
    text = text.strip()
    if "/" not in text:
        if named and text in named:
            return parse_window(named[text], now=now)
        known = ", ".join(sorted(named or {})) or "none configured"
        raise WindowError(f"{text!r}: expected START/END, START/PT2H or a named window ({known})")
    left, right = text.split("/", 1)
    start = parse_instant(left, now=now)
    if right.strip().upper().startswith("P"):
        return ChangeWindow(start, start + parse_duration(right))
    return ChangeWindow(start, parse_instant(right, now=now))
