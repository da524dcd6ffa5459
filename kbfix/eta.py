"""How long the rest of a run will take, as the live view says it (issue 14): pure functions.

What the figure is: a rounded estimate, never a promise. Each host weighs `host_weight(its
planned seconds)`: `HOST_BASE_S` (connect, gather, verify) plus the plan's per-action estimates
(apply with a plan; a check, a plan or a resume has none, so every host weighs the same and this
is the host rate). The observed throughput (weight finished per second, measured up to the last
host that finished, so it does not decay while hosts are busy) of the running batch is applied to
the weight left in the whole run, minus the time since that last host finished; before the
running batch has `MIN_DONE` finished hosts, the throughput of the last batch that had that many
stands in; before any, the view says "estimating…". It is never less than the longest planned
remainder of a host still to finish (one host's installer does not run faster because others
were quick). Throughput, not mean host time, because it carries the parallelism the hosts ran
with. The figure is rounded up (`rounded_seconds`: 10 s steps under 10 minutes, then minutes);
once the estimate is used up while hosts still run, the view says so instead of a number. When
nothing meaningful can be said (no hosts left, the run stopping) the text is hidden.
"""

from __future__ import annotations

import math

#: Finished hosts needed before a throughput is trusted (one or two hosts say little about a fleet).
MIN_DONE = 3

#: Seconds a host weighs beyond its planned actions (connect, gather, verify): a host with nothing
#: to install is not free, but it is far lighter than an installer (a rough, documented constant).
HOST_BASE_S = 5.0

#: The text when the estimate is used up while hosts are still running.
PAST_ESTIMATE = "time left: past the estimate, hosts still running"


def host_weight(estimated_s: float | None) -> float:
    """A host's weight in estimated seconds: `HOST_BASE_S` plus its planned seconds (None/negative: 0)."""
    extra = estimated_s if estimated_s is not None and math.isfinite(estimated_s) and estimated_s > 0 else 0.0
    return HOST_BASE_S + extra


def rounded_seconds(seconds: float) -> float:
    """Round an estimate UP to what it can claim: 10 s steps under 10 minutes, whole minutes above."""
    if not math.isfinite(seconds) or seconds <= 0:
        return 0.0
    step = 10 if seconds < 600 else 60
    return float(math.ceil(seconds / step) * step)


def remaining_work_seconds(left_weight: float, rate: float | None, since_last_s: float = 0.0,
                           floor_s: float = 0.0) -> float | None:
    """Seconds for `left_weight` at `rate` (weight per second) minus `since_last_s` (time since the
    rate was last measured), never under `floor_s` (the longest planned remainder of a host left);
    0 when no weight is left, None when the rate is unknown. Negative means the estimate is used up.
    """
    if left_weight <= 0:
        return 0.0
    if rate is None or not rate > 0 or not math.isfinite(rate):
        return None
    raw = left_weight / rate - max(0.0, since_last_s)
    return max(raw, floor_s) if floor_s > 0 else raw


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
    """The live view's words: `about 03:20 left` (rounded up, `rounded_seconds`), `time left:
    estimating…` while no rate is known, `PAST_ESTIMATE` when the estimate is used up (seconds ≤ 0)
    while hosts are left, or None (hidden) when no hosts are left or the run is stopping."""
    if stopping or left <= 0:
        return None
    if seconds is None:
        return "time left: estimating…"
    if seconds <= 0:
        return PAST_ESTIMATE
    return f"about {clock_text(rounded_seconds(seconds))} left"


def clock_text(seconds: float) -> str:
    """`MM:SS`, or `H:MM:SS` from an hour; negative or non-finite values read as 0, fractions round up
    (an estimate of 0.4 s left is `00:01`, not `00:00` while hosts are still running)."""
    s = math.ceil(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    m, s = divmod(s, 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
