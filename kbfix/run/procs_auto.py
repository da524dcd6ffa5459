"""`--procs` left to kbfix (the default): one process until it is the run's bottleneck, then the
machine's cores (issue 19).

Why not always the cores: a contact process costs CPU of its own (its forkserver's imports, about
1 s; its own inventory load; every answer pickled twice; one more process to schedule), and buys
time only when this process is CPU-bound while a core sits idle. Measured on the fleet benchmark
(2 cores, the lab serving 1000 hosts in a process of its own, benchmarks/fleet.py): with
`--procs 2` the run took 12.6 s and 8.4 ms of controller CPU per host, in one process 10.1 s and
5.4 ms — the lab held the second core, so the second process only competed for it. Against a real
fleet the lab's core is free, one process saturates its core near 200 hosts per second, and
spreading pays.

So a run of at least `HOSTS_PER_PROC` hosts starts in this process, and `AdaptiveEngine` watches
two figures over windows of `WINDOW_S` seconds (`CpuMeter`): this process's CPU seconds per
second (from `time.process_time`) and the machine's idle cores (from Linux's /proc/stat, the
`cpu` line: proc(5)). Once this process has been CPU-bound for `SATURATED_WINDOWS` windows in a
row while at least `IDLE_CORES` cores were idle, and enough hosts are left to pay for the start,
it starts a `ContactPool` in the background; from then on, check-mode sessions go to the pool
(sessions already open finish here; if the pool cannot start or its children stop, the hosts
not yet sent go on in this process). `--procs N` still forces N processes from the start, and
`--procs 1` one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.run.procs import HOSTS_PER_PROC, ContactPool, InventorySpec, ProcsSession, SpreadEngine, procs_for
from kbfix.run.protocols import HostLike

log = logging.getLogger(__name__)

#: Seconds per measurement window.
WINDOW_S = 1.0
#: CPU seconds per second at which this process counts as CPU-bound (one core is 1.0; a little
#: below it, since the GIL's hand-offs keep a saturated Python process just under a full core).
BUSY_SHARE = 0.85
#: Idle cores the machine must show for a second process to have somewhere to run.
IDLE_CORES = 0.5
#: Consecutive CPU-bound windows before spreading (the run's first second is mostly one-off work:
#: playbooks compiled, the store opened, a hundred threads started).
SATURATED_WINDOWS = 2


@dataclass(frozen=True)
class LoadSample:
    """One window: `busy` = this process's CPU seconds per wall second (0.0–cores);
    `idle_cores` = the machine's idle CPU time per wall second, in cores (None: unknown, no
    /proc/stat)."""

    busy: float
    idle_cores: float | None


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """(idle ticks, total ticks) from /proc/stat's first `cpu` line (proc(5): user nice system
    idle iowait irq softirq steal …, in USER_HZ ticks, summed over all CPUs; idle counts idle +
    iowait). None when the text has no such line or a field is not a count."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "cpu":
            continue
        try:
            ticks = [int(f) for f in fields[1:]]
        except ValueError:
            return None
        if len(ticks) < 4 or any(t < 0 for t in ticks):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        # guest and guest_nice (fields 9, 10) are already counted in user and nice (proc(5))
        return idle, sum(ticks[:8])
    return None


def _read_proc_stat(path: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    try:
        return parse_proc_stat(path.read_text(encoding="ascii", errors="replace"))
    except OSError:  # not Linux, or /proc not mounted
        return None


class LoadMeter(Protocol):
    """What AdaptiveEngine reads: a LoadSample once per window, None in between."""

    def sample(self) -> LoadSample | None:
        """The window just ended, or None."""


class CpuMeter:
    """Samples this process's CPU and the machine's idle cores once per `window_s` seconds.
    `sample()` returns a LoadSample when a window has passed since the last one, else None
    (cheap enough to call for every host). Thread-safe."""

    def __init__(self, window_s: float = WINDOW_S, *, cores: int | None = None,
                 read_stat: Callable[[], tuple[int, int] | None] = _read_proc_stat) -> None:
        self.window_s = window_s
        self.cores = cores if cores is not None else (os.cpu_count() or 1)
        self._read_stat = read_stat
        self._lock = threading.Lock()
        self._t, self._cpu, self._stat = time.monotonic(), time.process_time(), read_stat()

    def sample(self) -> LoadSample | None:
        """The window just ended, or None when it has not ended yet."""
        now = time.monotonic()
        if now - self._t < self.window_s:
            return None
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._t
            if elapsed < self.window_s or elapsed <= 0:
                return None
            cpu, stat = time.process_time(), self._read_stat()
            idle_cores = None
            if stat is not None and self._stat is not None and stat[1] > self._stat[1]:
                idle_share = (stat[0] - self._stat[0]) / (stat[1] - self._stat[1])
                idle_cores = max(0.0, idle_share) * self.cores
            busy = (cpu - self._cpu) / elapsed
            self._t, self._cpu, self._stat = now, cpu, stat
            return LoadSample(busy, idle_cores)


def wants_more_processes(sample: LoadSample) -> bool:
    """Whether one window shows this process CPU-bound (`BUSY_SHARE`) with a core to spare
    (`IDLE_CORES`; unknown counts as spare: without /proc/stat kbfix cannot see other load)."""
    return sample.busy >= BUSY_SHARE and (sample.idle_cores is None or sample.idle_cores >= IDLE_CORES)


class AdaptiveEngine(SpreadEngine):
    """`base`'s playbooks, packages and history, in this process until `CpuMeter` shows it
    CPU-bound with cores idle (see the module docstring); then check-mode gather + assess of the
    hosts opened from then on run in a `ContactPool` of `procs_for(0, hosts left, forks)`
    processes (assessed there: `SpreadEngine.assess`). Apply sessions (check_mode=False) always
    stay here. Call `close()` at the end of the run (`kbfix.run.procs.spread` does).

    `hosts`: the run's host count (to know how many are left); `meter`: the load readings;
    `min_hosts_left`: fewest hosts not yet opened worth a start; `procs`: the pool's processes
    (None: `procs_for(0, hosts left, forks)`, the cores with at least HOSTS_PER_PROC hosts each);
    `background`: start the pool in a thread (True; the run goes on here meanwhile) or in the
    session() call that decided it (tests)."""

    def __init__(self, base: PlaybookEngine, spec: InventorySpec, *, hosts: int, forks: int,
                 meter: LoadMeter | None = None, background: bool = True,
                 min_hosts_left: int = HOSTS_PER_PROC, procs: int | None = None) -> None:
        super().__init__(base)
        self.spec = spec
        self.forks = forks
        self.hosts_left = hosts
        self.meter: LoadMeter = meter if meter is not None else CpuMeter()
        self.background = background
        self.min_hosts_left = min_hosts_left
        self.procs = procs
        self.pool: ContactPool | None = None  # set once it runs
        self.in_children = 0  # hosts whose check-mode work went to the pool
        self._saturated = 0
        self._starting: threading.Thread | None = None
        self._decided = False
        self._route_lock = threading.Lock()

    # ---- routing

    def session(self, host: HostLike, *, check_mode: bool) -> Any:
        """A ProcsSession once the pool runs (check mode only), else the real AgentSession."""
        if check_mode:
            pool = self._route()
            if pool is not None:
                return ProcsSession(pool, host)
        return super().session(host, check_mode=check_mode)

    def _route(self) -> ContactPool | None:
        with self._route_lock:
            self.hosts_left -= 1
            if self.pool is not None and self.pool.alive:
                self.in_children += 1
                return self.pool
            if self._decided:  # started, being started, or its children are gone: this process goes on
                return None
            sample = self.meter.sample()
            if sample is None:
                return None
            log.debug("load window: this process %.2f cores busy, %s cores idle", sample.busy,
                      "?" if sample.idle_cores is None else f"{sample.idle_cores:.2f}")
            self._saturated = self._saturated + 1 if wants_more_processes(sample) else 0
            if self._saturated < SATURATED_WINDOWS or self.hosts_left < self.min_hosts_left:
                return None
            procs = self.procs or procs_for(0, self.hosts_left, self.forks)
            if procs <= 1:
                return None
            self._decided = True
            log.info("spreading contact work over %d processes: this one used %.0f %% of a core and %s cores "
                     "were idle (kbfix.run.procs_auto)", procs, sample.busy * 100,
                     "?" if sample.idle_cores is None else f"{sample.idle_cores:.1f}")
            if not self.background:
                self._start(procs)
                if self.pool is None:
                    return None
                self.in_children += 1
                return self.pool
            self._starting = threading.Thread(target=self._start, args=(procs,), name="kbfix-procs-start", daemon=True)
            self._starting.start()
            return None

    def _start(self, procs: int) -> None:
        pool = ContactPool(self.spec, procs, self.forks)
        try:
            pool.__enter__()
        except Exception:  # the run goes on in this process
            log.warning("could not start %d contact processes; the run goes on in one", procs, exc_info=True)
            pool.close()
            return
        self.pool = pool

    def close(self) -> None:
        """Wait for a pool being started, then stop it (its children finish their hosts first)."""
        if self._starting is not None:
            self._starting.join()
        if self.pool is not None:
            self.pool.close()
