"""How work rolls out over hosts: serial batches, the max-fail stop, forks and per-site caps.

- `parse_serial("1,10%,100%")` and `batches(items, steps)` follow Ansible's `serial`: each step
  is a host count or a percentage of all hosts (rounded down, at least 1); the last step repeats
  until every host is in a batch.
- `batch_failed(failed, size, max_fail_percent)` follows Ansible's `max_fail_percentage`: the
  rollout stops when the failed share of a batch *exceeds* the percentage.
- `run_concurrently` runs one callable per item on at most `forks` threads with at most
  `max_per_site` running per site. Threads suit WinRM (I/O-bound). A host past its deadline is
  reported through `on_timeout` and its slot freed, so one dead or slow host never stalls the
  others; its thread is abandoned (daemon) and its late answer ignored.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class RolloutError(ValueError):
    """A `--serial` or `--max-fail-percent` value that cannot be used."""


@dataclass(frozen=True)
class SerialStep:
    """One `serial` value: a host count, or a percentage (0 < p ≤ 100) of all hosts."""

    value: float
    percent: bool = False

    def size(self, total: int) -> int:
        """The batch size for `total` hosts (at least 1)."""
        if self.percent:
            return max(1, int(total * self.value / 100.0))
        return max(1, int(self.value))

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


def parse_serial(text: str | None) -> list[SerialStep]:
    """`"1,10%,100%"` → steps; None or empty → one batch of all hosts. Raises RolloutError."""
    if not text or not text.strip():
        return [SerialStep(100.0, percent=True)]
    steps: list[SerialStep] = []
    for raw in text.split(","):
        part = raw.strip()
        try:
            if part.endswith("%"):
                value = float(part[:-1])
                if not 0 < value <= 100:
                    raise ValueError
                steps.append(SerialStep(value, percent=True))
            else:
                count = int(part)
                if count < 1:
                    raise ValueError
                steps.append(SerialStep(float(count)))
        except ValueError:
            raise RolloutError(f"--serial {text!r}: {part!r} is not a positive count or a percentage in (0, 100]") from None
    return steps


def batches(items: Sequence[T], steps: Sequence[SerialStep]) -> list[list[T]]:
    """Split `items` (in order) into batches by `steps`; the last step repeats."""
    total = len(items)
    out: list[list[T]] = []
    i = 0
    k = 0
    while i < total:
        step = steps[min(k, len(steps) - 1)] if steps else SerialStep(100.0, percent=True)
        size = step.size(total)
        out.append(list(items[i : i + size]))
        i += size
        k += 1
    return out


def batches_by_layout(items: Sequence[T], layout: Sequence[Sequence[str]], name: Callable[[T], str]) -> list[list[T]]:
    """Split `items` by a recorded layout (names per batch, as `batches` made them for an earlier
    run): each batch keeps the layout's order and only the items present; empty batches drop
    out; items the layout does not name form one last batch."""
    by_name = {name(i): i for i in items}
    out: list[list[T]] = []
    placed: set[str] = set()
    for names in layout:
        group = [by_name[n] for n in names if n in by_name and n not in placed]
        placed.update(name(i) for i in group)
        if group:
            out.append(group)
    rest = [i for i in items if name(i) not in placed]
    if rest:
        out.append(rest)
    return out


def batch_failed(failed: int, size: int, max_fail_percent: float | None) -> bool:
    """True when `failed` of `size` hosts exceeds `max_fail_percent` (None: never stop).

    Ansible semantics: with 0, any failure stops; with 100, nothing does.
    """
    if max_fail_percent is None or size == 0:
        return False
    return failed * 100.0 > max_fail_percent * size


@dataclass
class _Running(Generic[T]):
    item: T
    site: Hashable
    started: float


def run_concurrently(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    forks: int,
    site_of: Callable[[T], Hashable] = lambda _item: None,
    max_per_site: int | None = None,
    deadline_of: Callable[[T], float | None] = lambda _item: None,
    should_stop: Callable[[], bool] = lambda: False,
    gate: Callable[[T], R | None] = lambda _item: None,
    on_error: Callable[[T, BaseException], R],
    on_timeout: Callable[[T], R],
    on_skip: Callable[[T], R],
    on_done: Callable[[T, R], None] = lambda _item, _result: None,
    grace_seconds: float = 30.0,
    poll_seconds: float = 0.05,
) -> list[R]:
    """Run `work(item)` for every item, concurrently; return the results in input order.

    forks: maximum concurrent items; max_per_site: maximum concurrent items per `site_of(item)`
    (None: no cap). deadline_of(item): seconds the item may run before `on_timeout(item)`
    becomes its result (None: no deadline). Before an item starts, `gate(item)` may return a
    result instead of running it (e.g. `skipped: window`). When `should_stop()` turns true, no
    new item starts: every unstarted item gets `on_skip(item)`, running ones get up to
    `grace_seconds` to finish and then `on_timeout(item)`. An exception in `work` becomes
    `on_error(item, exc)`, never an exception here. `on_done(item, result)` is called from the
    calling thread once per item, as results arrive (progress display, store writes).

    Items run on worker threads that take the next item once theirs is done (cost, issue 19: a
    thread started per host cost ~115 µs of CPU against ~36 µs for a reused one). A worker whose
    item passed its deadline is left to finish it and a new worker takes its place, so `forks`
    items always run. A worker keeps no state from one item to the next (the one per-thread
    value of the remoting layer, bounded_http's last request, is set anew by every request).
    """
    if forks < 1:
        raise RolloutError("forks must be at least 1")
    results: dict[int, R] = {}
    pending: list[int] = list(range(len(items)))
    running: dict[int, _Running[T]] = {}
    per_site: Counter[Hashable] = Counter()
    done_q: queue.Queue[tuple[int, R]] = queue.Queue()
    stop_at: float | None = None
    checked_at = time.monotonic()  # when the running items' deadlines were last looked at

    def finish(idx: int, result: R) -> None:
        results[idx] = result
        on_done(items[idx], result)

    work_q: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    workers = 0  # started so far
    idle = 0  # workers waiting on work_q (or about to: each answer on done_q frees its worker)

    def worker() -> None:
        while True:
            idx = work_q.get()
            if idx is None:
                return
            item = items[idx]
            try:
                out = work(item)
            except BaseException as exc:  # a host's failure is a value, never a crash of the run
                out = on_error(item, exc)
            done_q.put((idx, out))

    while pending or running:
        stopping = stop_at is not None or should_stop()
        if stopping and stop_at is None:
            stop_at = time.monotonic() + grace_seconds
        if stopping:
            for idx in pending:
                finish(idx, on_skip(items[idx]))
            pending = []
        # Start what fits: forks overall, max_per_site per site, in input order.
        k = 0
        while pending and len(running) < forks and k < len(pending):
            idx = pending[k]
            site = site_of(items[idx])
            if max_per_site is not None and per_site[site] >= max_per_site:
                k += 1
                continue
            pending.pop(k)
            gated = gate(items[idx])
            if gated is not None:
                finish(idx, gated)
                continue
            running[idx] = _Running(items[idx], site, time.monotonic())
            per_site[site] += 1
            if idle:
                idle -= 1
            else:
                workers += 1
                threading.Thread(target=worker, name=f"kbfix-fork-{workers}", daemon=True).start()
            work_q.put(idx)
        if not running:
            continue
        try:
            idx, out = done_q.get(timeout=poll_seconds)
        except queue.Empty:
            idx = -1
        else:
            idle += 1  # its worker takes the next item (also one whose item timed out before)
        if idx in running:
            per_site[running.pop(idx).site] -= 1
            finish(idx, out)
        now = time.monotonic()
        # cost (issue 19): the deadlines are looked at once per poll interval, not after every
        # finished item (a walk over all `forks` running items each time: 100 calls per host).
        if now - checked_at < poll_seconds and stop_at is None:
            continue
        checked_at = now
        for ridx, r in list(running.items()):
            limit = deadline_of(r.item)
            over_deadline = limit is not None and now - r.started > limit
            over_grace = stop_at is not None and now > stop_at
            if over_deadline or over_grace:
                running.pop(ridx)
                per_site[r.site] -= 1
                finish(ridx, on_timeout(r.item))
    for _ in range(workers):  # one stop each; a worker still on a timed-out item takes its own when it returns
        work_q.put(None)
    return [results[i] for i in range(len(items))]
