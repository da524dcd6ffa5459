"""What the operator sees while a run runs.

`RichProgress` (a terminal): a live bar per batch and one overall, with host counts by status.
`PlainProgress` (not a TTY, CI logs): one line per finished host, `host  status  detail`,
plus a line per batch, so a log reads top to bottom; with `-q` it prints nothing (the command
prints its one summary line). `make_progress` picks one. Both print to stderr so stdout stays
clean for `--format json`. Hosts a stop leaves unstarted are reported after their batch under
"not started", never counted into the batch that ran: a batch counter never exceeds its size.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kbfix.eta import clock_text, eta_text, host_weight, remaining_work_seconds, throughput
from kbfix.terminal import safe_markup, safe_text
from playbooks.model import HostResult, Status

_STYLE = {
    Status.COMPLIANT: "green", Status.REMEDIATED: "green", Status.MITIGATED: "green",
    Status.NOT_APPLICABLE: "dim", Status.SKIPPED: "yellow", Status.PENDING_REBOOT: "yellow",
    Status.NON_COMPLIANT: "red", Status.UNKNOWN: "magenta", Status.FAILED: "bold red", Status.UNREACHABLE: "bold red",
}


def host_detail(result: HostResult) -> str:
    """A short reason for one host: its error, or its findings' `advisory: status (reason)`."""
    if result.error is not None:
        return f"{result.error.kind}: {result.error.message}"
    parts = []
    for f in result.findings:
        extra = f" ({f.skip_reason})" if f.skip_reason else ""
        parts.append(f"{f.advisory}: {f.status.value}{extra}")
    return "; ".join(parts)


RELINKED_HEADER = "linked to their WSUS server after their line (the status the final table shows):"
"""The plain output's header above hosts whose status changed when the run linked clients to servers."""


def relink_detail(result: HostResult, before: Status | None) -> str:
    """Why a host's status changed after it finished: `was non_compliant; linked to WSUS server ...`."""
    notes = [n for f in result.findings for n in f.notes[-1:] if f.linked_host]
    was = f"was {before.value}; " if before is not None else "relinked by this run; "
    return was + ("; ".join(notes) or host_detail(result))


def _move(counts: Counter[Status], status: Status, before: Status | None) -> None:
    if before is not None and counts[before] > 0:
        counts[before] -= 1
    counts[status] += 1


def host_line(host: str, status: Status, detail: str, width: int) -> Text:
    """`host  status  detail` fitted to `width` terminal cells: only the detail is cut, with an
    ellipsis (`…`); the host name and status are always whole, even when they alone overflow
    (then the detail is left out). Control characters are shown escaped (kbfix.terminal)."""
    line = Text(safe_text(host))
    line.append("  ")
    line.append(status.value, style=_STYLE.get(status, ""))
    room = width - line.cell_len - 2
    tail = Text(safe_text(detail))
    if not tail.plain or room < 2:  # no room for even one character and the ellipsis
        return line
    if tail.cell_len > room:
        tail.truncate(room, overflow="ellipsis")
    line.append("  ")
    line.append_text(tail)
    return line


def counts_text(counts: Counter[Status]) -> str:
    """`compliant 3 · non_compliant 1` in status order (best first)."""
    return " · ".join(f"{s.value} {counts[s]}" for s in Status if counts[s])


class PlainProgress:
    """Line-per-host output (no colour, no cursor movement)."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.counts: Counter[Status] = Counter()
        self.total = 0
        self._batch_left = 0
        self._outside = False
        self._relinked = False

    def _print(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def start(self, kind: str, total: int, batches: int) -> None:
        """Print the run header (not with -q)."""
        self.total = total
        self._print(f"{kind}: {total} host(s) in {batches} batch(es)")

    def batch(self, index: int, hosts: int) -> None:
        """Print the batch header (not with -q)."""
        self._batch_left = hosts
        self._outside = False
        self._print(f"batch {index + 1}: {hosts} host(s)")

    def host_done(self, result: HostResult) -> None:
        """One line: host, status, detail (not with -q). A host beyond the running batch's size
        (left unstarted by a stop) comes under a "not started" header."""
        self.counts[result.status] += 1
        if self._batch_left > 0:
            self._batch_left -= 1
        elif not self._outside:
            self._outside = True
            self._print("not started (the run stopped before their batch):")
        self._print(f"{safe_text(result.host)}\t{result.status.value}\t{safe_text(host_detail(result))}")

    def host_relinked(self, result: HostResult, before: Status | None) -> None:
        """A host's status changed after its line (a WSUS client following its server's verdict):
        move its count from `before` (None: not counted in this run yet) and say why."""
        _move(self.counts, result.status, before)
        if not self._relinked:
            self._relinked = True
            self._print(RELINKED_HEADER)
        self._print(f"{safe_text(result.host)}\t{result.status.value}\t{safe_text(relink_detail(result, before))}")

    def stop(self) -> None:
        """Print the totals (not with -q)."""
        self._print(f"done: {counts_text(self.counts)}")

    def stopping(self, reason: str, grace_s: float, running: int | None = None) -> None:
        """Acknowledge a stop request at once (a line, even with -q: the operator pressed a key)."""
        print(f"stopping ({reason}): no new hosts start; waiting up to {grace_s:g} s for the running hosts",
              file=self.stream, flush=True)

    def abandon(self) -> None:
        """A second Ctrl-C: say what is abandoned."""
        print("abandoning the running hosts: their outcome will read unknown; "
              "`kbfix apply --resume latest` re-reads them and repeats no installer", file=self.stream, flush=True)


class RichProgress:
    """Live bars (overall and current batch) with counts by status; finished hosts scroll above."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.counts: Counter[Status] = Counter()
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self._overall: TaskID | None = None
        self._batch: TaskID | None = None
        self._batch_left = 0

    def start(self, kind: str, total: int, batches: int) -> None:
        """Show the overall bar."""
        self._batches = batches
        self._progress.start()
        self._overall = self._progress.add_task(f"{kind} (all hosts)", total=total)

    def batch(self, index: int, hosts: int) -> None:
        """Replace the batch bar."""
        if self._batch is not None:
            self._progress.remove_task(self._batch)
        self._batch = self._progress.add_task(f"batch {index + 1}/{self._batches}", total=hosts)
        self._batch_left = hosts

    def host_done(self, result: HostResult) -> None:
        """Advance both bars; print the host's line above them."""
        self.counts[result.status] += 1
        style = _STYLE.get(result.status, "")
        self._progress.console.print(
            f"{safe_markup(result.host)}  [{style}]{result.status.value}[/{style}]  {safe_markup(host_detail(result))}",
            markup=True,
            highlight=False, soft_wrap=True,
        )
        if self._overall is not None:
            self._progress.update(self._overall, advance=1)
            self._progress.update(self._overall, description=counts_text(self.counts))
        if self._batch is not None and self._batch_left > 0:  # hosts a stop left unstarted are not this batch's
            self._batch_left -= 1
            self._progress.update(self._batch, advance=1)

    def host_relinked(self, result: HostResult, before: Status | None) -> None:
        """A host's status changed after its line: move its count and print the new line."""
        _move(self.counts, result.status, before)
        style = _STYLE.get(result.status, "")
        self._progress.console.print(
            f"{safe_markup(result.host)}  [{style}]{result.status.value}[/{style}]  "
            f"{safe_markup(relink_detail(result, before))}", markup=True, highlight=False, soft_wrap=True)
        if self._overall is not None:
            self._progress.update(self._overall, description=counts_text(self.counts))

    def stop(self) -> None:
        """Stop the live display (the bars stay printed)."""
        self._progress.stop()


def _clock(seconds: float) -> str:
    return clock_text(int(seconds))  # elapsed time: whole seconds passed


class LiveProgress:
    """A rich Live view on a terminal: one line per running host with its current step and how
    long it has been on it (`WSUS-DK  KB954960 install_package 1/1  00:42`), a status line with the
    batch (`batch 2/3  1/3`), hosts done and left, counts by status, elapsed time and the time left
    (kbfix.eta: `time left: estimating…` until enough hosts finished, then a rounded `about 03:20
    left` weighted by the plan's per-host estimates when `plan_estimates` gave them; hidden once
    stopping); finished hosts scroll above. Ctrl-C is acknowledged at once
    (`stopping`), a second one says what it abandons. `clock`: monotonic seconds (tests)."""

    def __init__(self, console: Console | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.counts: Counter[Status] = Counter()
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, float]] = {}
        self._kind = ""
        self._total = self._done = self._batches = self._batch_index = self._batch_size = self._batch_done = 0
        self._clock = clock
        self._t0 = self._batch_t0 = clock()
        self._prior_rate: float | None = None  # the last batch's weight throughput with enough hosts (kbfix.eta)
        self._estimates: dict[str, float] = {}  # host → the plan's estimated seconds (apply)
        self._started: dict[str, float] = {}  # host → when its first step began
        self._finished: set[str] = set()
        self._done_weight = self._batch_weight = 0.0
        self._batch_last = self._t0  # when the running batch's last host finished
        self._stopping: str | None = None
        self._live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self._render)

    def start(self, kind: str, total: int, batches: int) -> None:
        """Start the live view."""
        self._kind, self._total, self._batches = kind, total, batches
        self._t0 = self._batch_t0 = self._clock()
        self._live.start()

    def plan_estimates(self, estimates: dict[str, float]) -> None:
        """The plan's estimated seconds of each host's actions (0: nothing to install), to weight
        the time left by (kbfix.eta.host_weight); without them every host weighs the same."""
        with self._lock:
            self._estimates = dict(estimates)

    def batch(self, index: int, hosts: int) -> None:
        """A batch starts."""
        with self._lock:
            now = self._clock()
            self._prior_rate = self._batch_rate() or self._prior_rate
            self._batch_index, self._batch_size, self._batch_done, self._batch_t0 = index, hosts, 0, now
            self._batch_weight, self._batch_last = 0.0, now

    def host_step(self, host: str, step: str) -> None:
        """`host` starts `step` (shown with the time spent on it)."""
        with self._lock:
            now = self._clock()
            self._running[host] = (step, now)
            self._started.setdefault(host, now)

    def host_done(self, result: HostResult) -> None:
        """Print the host's line above the view; count it (into its batch only while the batch
        has room: hosts a stop left unstarted are not the running batch's)."""
        with self._lock:
            self._running.pop(result.host, None)
            self.counts[result.status] += 1
            self._done += 1
            weight = host_weight(self._estimates.get(result.host))
            self._finished.add(result.host)
            self._done_weight += weight
            if self._batch_done < self._batch_size:
                self._batch_done += 1
                self._batch_weight += weight
                self._batch_last = self._clock()
        # fitted to the console: a wrapped line breaks mid-word and pushes the live view around
        self.console.print(host_line(result.host, result.status, host_detail(result), self.console.width),
                           highlight=False, soft_wrap=True)

    def host_relinked(self, result: HostResult, before: Status | None) -> None:
        """A host's status changed after its line (a WSUS client following its server): move its
        count from `before` (None: a host of an earlier run, not counted here) and print why."""
        with self._lock:
            _move(self.counts, result.status, before)
        self.console.print(host_line(result.host, result.status, relink_detail(result, before), self.console.width),
                           highlight=False, soft_wrap=True)

    def stopping(self, reason: str, grace_s: float, running: int | None = None) -> None:
        """Acknowledge a stop at once: a line above the view, and the view says it too."""
        with self._lock:
            n = len(self._running) if running is None else running
            self._stopping = f"stopping ({reason}): waiting up to {grace_s:g} s for {n} running host(s)"
        self.console.print(self._stopping, markup=False, highlight=False)

    def abandon(self) -> None:
        """A second Ctrl-C: name the hosts abandoned."""
        with self._lock:
            names = ", ".join(sorted(self._running)) or "none"
        self.console.print(f"abandoning running host(s): {safe_text(names)}; their outcome will read unknown; "
                           "`kbfix apply --resume latest` re-reads them and repeats no installer",
                           markup=False, highlight=False)
        self._live.stop()

    def stop(self) -> None:
        """End the view and print the totals."""
        self._live.stop()
        self.console.print(f"done: {counts_text(self.counts)}", markup=False, highlight=False)

    def _batch_rate(self) -> float | None:
        """Weight per second of the running batch up to its last finished host (None: too few)."""
        elapsed = self._batch_last - self._batch_t0
        if throughput(self._batch_done, elapsed) is None:
            return None
        return self._batch_weight / elapsed

    def eta(self) -> str | None:
        """The time-left words for the status line (kbfix.eta.eta_text), None when hidden: a
        rounded estimate (see kbfix.eta), the weight left over the batch's weight throughput."""
        with self._lock:
            now = self._clock()
            left = self._total - self._done
            known = sum(host_weight(e) for e in self._estimates.values())
            total = known + host_weight(None) * max(0, self._total - len(self._estimates))
            rate = self._batch_rate()
            since = now - self._batch_last
            if rate is None:
                rate, since = self._prior_rate, now - self._batch_t0
            floor = max((host_weight(e) - (now - self._started[h] if h in self._started else 0.0)
                         for h, e in self._estimates.items() if h not in self._finished), default=0.0)
            seconds = remaining_work_seconds(total - self._done_weight, rate, since, floor)
            return eta_text(left, seconds, stopping=self._stopping is not None)

    def _render(self) -> Group:
        now = self._clock()
        eta = self.eta()
        with self._lock:
            running = sorted(self._running.items(), key=lambda kv: kv[1][1])
            status = (f"{self._kind}  batch {self._batch_index + 1}/{self._batches}  {self._batch_done}/{self._batch_size}"
                      f"  ·  done {self._done}/{self._total}  left {self._total - self._done}"
                      f"  ·  {counts_text(self.counts) or 'no results yet'}  ·  {_clock(now - self._t0)}"
                      + (f"  ·  {eta}" if eta else ""))
            stopping = self._stopping
        table = Table.grid(padding=(0, 2))
        for _ in range(3):
            table.add_column()
        for host, (step, since) in running:
            table.add_row(Text(safe_text(host)), Text(step), Text(_clock(now - since)))
        parts: list[Any] = [table, Text(status)]
        if stopping:
            parts.append(Text(stopping, style="yellow"))
        return Group(*parts)


def make_progress(*, quiet: bool = False, no_color: bool = False, stream: IO[str] | None = None) -> PlainProgress | LiveProgress:
    """The live view on a terminal (without colour for --no-color); plain lines when not a TTY or -q."""
    out = stream or sys.stderr
    if quiet or not out.isatty():
        return PlainProgress(out, quiet=quiet)
    return LiveProgress(Console(file=out, no_color=no_color))
