"""How a run runs (`RunOptions`), its stop switch (`RunControl`) and what it returns (`RunOutcome`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kbfix import __version__
from kbfix.planfile import PlanDocument
from kbfix.rollout import SerialStep
from kbfix.runinfo import RunInfo
from kbfix.window import ChangeWindow
from playbooks.model import HostResult
from playbooks.reboot import RebootOptions


def kbfix_version() -> str:
    """The installed kbfix version (package metadata), `0+unknown` when not installed."""
    return __version__


@dataclass
class RunOptions:
    """How a run runs. Times are seconds.

    forks: hosts in flight at once; host_deadline_s: the longest one host may take for gather
    and verify (apply adds twice the plan's estimate); serial: batch steps (None: one batch);
    max_fail_percent: stop before the next batch when a batch's failures (failed, unreachable,
    unknown — not non-compliant hosts) exceed it; max_per_site: hosts in flight per site;
    window: the change window (apply only); batches: a fixed batch layout, host names per batch
    (apply records the one it used; `--resume` hands the interrupted run's back so the rollout
    continues in the same batches; it wins over serial); grace_s: how long running hosts may finish after a
    stop request; inventory_hash: the inventory digest to record; recorded: the options to record
    in the run (no secrets; the store redacts secret-looking keys anyway); reboot: when and how
    apply restarts hosts (playbooks.reboot.RebootOptions; default never).
    """

    forks: int = 20
    host_deadline_s: float | None = 600.0
    serial: list[SerialStep] | None = None
    max_fail_percent: float | None = None
    max_per_site: int | None = None
    window: ChangeWindow | None = None
    batches: list[list[str]] | None = None
    grace_s: float = 60.0
    inventory_hash: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    # evidence (issue 15): who and why, recorded on the run (operator None: user@machine).
    operator: str | None = None
    change_ticket: str | None = None
    approved_by: str | None = None
    reboot: RebootOptions = field(default_factory=RebootOptions)  # reboot (issue 21): apply only


class RunControl:
    """A run's stop switch: set by signals or by a caller; read by the scheduler and by apply
    before every action. `reason` says why (`SIGINT`, `SIGTERM`, ...)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self._on_stop: list[Callable[[str], None]] = []
        self._on_abandon: list[Callable[[], None]] = []

    def listen(self, on_stop: Callable[[str], None] | None = None, on_abandon: Callable[[], None] | None = None) -> None:
        """Call `on_stop(reason)` when the first stop is requested (the display acknowledges it at
        once), and `on_abandon()` when a second Ctrl-C interrupts the running hosts."""
        if on_stop is not None:
            self._on_stop.append(on_stop)
        if on_abandon is not None:
            self._on_abandon.append(on_abandon)

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop starting new work."""
        first = not self._event.is_set()
        if self.reason is None:
            self.reason = reason
        self._event.set()
        if first:
            for callback in self._on_stop:
                callback(reason)

    @property
    def stopped(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    @contextlib.contextmanager
    def signals(self) -> Iterator[RunControl]:
        """Within the block, SIGINT/SIGTERM request a stop; a second SIGINT interrupts at once.
        Only installs handlers when called from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            if self.stopped and signum == signal.SIGINT:
                for callback in self._on_abandon:
                    callback()
                raise KeyboardInterrupt
            self.request_stop(name)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@dataclass
class RunOutcome:
    """A finished run: its identity (as stored), one result per host in host order, and for a
    plan run the plan document."""

    info: RunInfo
    results: list[HostResult]
    plan: PlanDocument | None = None
