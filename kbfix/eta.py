"""How long the rest of a run will take, as the live view says it (issue 14): pure functions.

The estimate is the observed throughput (hosts finished per second) of the running batch applied
to the hosts left in the whole run; before the running batch has `MIN_DONE` finished hosts, the
throughput of the last batch that had that many stands in (a serial rollout of small batches);
before any, there is no estimate and the view says "estimating…". Throughput, not mean host time,
because it already carries the parallelism (forks, batch size) the hosts actually ran with.
Later batches may be larger and so faster: the figure is an estimate from what was seen, never
a promise, and it is never negative. When nothing meaningful can be said (no hosts left, the run
stopping) the text is hidden.
"""

from __future__ import annotations

import math

#: Finished hosts needed before a throughput is trusted (one or two hosts say little about a fleet).
MIN_DONE = 3


def throughput(done: int, elapsed_s: float, *, min_done: int = MIN_DONE) -> float | None:
    """Hosts per second over `elapsed_s` seconds in which `done` hosts finished, or None when fewer
    than `min_done` finished or no time passed (no rate can be observed)."""
    if done < max(1, min_done) or not elapsed_s > 0 or not math.isfinite(elapsed_s):
        return None
    rate = done / elapsed_s
    return rate if math.isfinite(rate) else None  # a vanishing interval says nothing either


def remaining_seconds(left: int, rate: float | None) -> float | None:
    """Seconds for `left` hosts at `rate` hosts/second: 0 when none are left, None when the rate is
    unknown. Never negative."""
    if left <= 0:
        return 0.0
    if rate is None or not rate > 0 or not math.isfinite(rate):
        return None
    return left / rate


def eta_text(left: int, seconds: float | None, *, stopping: bool = False) -> str | None:
    """The live view's words: `about 03:20 left`, `time left: estimating…` while no rate is known,
    or None (hidden) when no hosts are left or the run is stopping (the old figure no longer holds)."""
    if stopping or left <= 0:
        return None
    if seconds is None:
        return "time left: estimating…"
    return f"about {clock_text(seconds)} left"


def clock_text(seconds: float) -> str:
    """`MM:SS`, or `H:MM:SS` from an hour; negative or non-finite values read as 0, fractions round up
    (an estimate of 0.4 s left is `00:01`, not `00:00` while hosts are still running)."""
    s = math.ceil(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    m, s = divmod(s, 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
