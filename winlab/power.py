"""A lab host's power cycle: boot time, pending-reboot indicators, and the restart itself.

Windows, as Microsoft documents it (sources cited where each fact is used):
- `Win32_OperatingSystem.LastBootUpTime` is the time the OS last started (MS docs
  "Win32_OperatingSystem class"); it changes only with a restart. Ansible's win_reboot (and
  ansible.windows' `plugin_utils/_reboot.py`) knows the host came back when this value differs
  from the one read before the restart; kbfix does the same.
- Pending-reboot indicators, read by the agent's `system.reboot_state` (remoting/PROTOCOL.md):
  the key `HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending`
  (Vista/Server 2008 and later), the key `...\\WindowsUpdate\\Auto Update\\RebootRequired`, and the
  value `HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager` `PendingFileRenameOperations`
  (Microsoft Scripting blog "Determine Pending Reboot Status—PowerShell Style! Part 1", 2013,
  lists these three for Server 2003 to 2012). Servicing removes the two keys once the restart
  has completed the operation.
- `MoveFileEx(..., MOVEFILE_DELAY_UNTIL_REBOOT)` registers a rename/delete that Session Manager
  performs at the next boot "before the files are referenced", reading it from
  `PendingFileRenameOperations` (Sysinternals "PendMoves and MoveFile", Mark Russinovich): a
  REG_MULTI_SZ of source/target pairs, NT paths (`\\??\\C:\\...`), an empty target = delete, a
  target starting with `!` = replace an existing file (MOVEFILE_REPLACE_EXISTING).
- `shutdown.exe /r /t N` restarts after N seconds; the WinRM service stops with the OS, so the
  endpoint refuses connections until it starts again after the boot.

The lab: `request_restart(delay_s)` schedules the restart; after `delay + shutdown_seconds` the
host goes down (the server closes its listener: connection refused, and drops its open
connections); after `reboot_seconds` more it comes back with a new boot time, its at-boot
changes applied (an installer's `at_boot:`, the file renames) and the indicators cleared. All
durations are multiplied by the host's `time_scale`. A host with `comes_back: false` stays down.

Settling after the boot (why `post_reboot_delay` exists, issue 21): a delayed auto-start
service "is started after other autostart services are started plus a short delay of
approximately two minutes" ([MS-SCMR] 2.2.33 SERVICE_DELAYED_AUTO_START_INFO; Vista/Server 2008
and later). On those systems the Windows Update service (wuauserv) starts that way, and the
`Auto Update\\RebootRequired` key is the Windows Update agent's own, removed when the agent
runs after the restart (the lab's model of it). WinRM (an ordinary automatic service) answers
before that, so a verify right after the boot still reads a restart pending. A fixture's
`boot.delayed_start_seconds` keeps that key for so long after the host is back (default 0:
cleared at the boot).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from winlab.hoststate import HostState
from winlab.installers import Changes

CBS_REBOOT_PENDING = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending"
WU_REBOOT_REQUIRED = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired"
SESSION_MANAGER = r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager"
PENDING_RENAMES = "PendingFileRenameOperations"
DEFAULT_LAST_BOOT = datetime(2008, 8, 1, 6, 0, 0, tzinfo=timezone.utc)
#: Real-time floor before a restarting lab host goes down, so the answer to `system.reboot`
#: leaves first even at time_scale 0 (shutdown.exe returns before Windows stops WinRM).
MIN_SHUTDOWN_S = 0.2


@dataclass(frozen=True)
class BootSpec:
    """A fixture's `boot:`: last boot time (UTC), seconds the restart keeps the host down,
    seconds from the restart's start to WinRM stopping, whether it comes back at all, and seconds
    after the boot until the delayed-start services (Windows Update) run (module docstring)."""

    last_boot: datetime = DEFAULT_LAST_BOOT
    reboot_seconds: float = 60.0
    shutdown_seconds: float = 5.0
    comes_back: bool = True
    delayed_start_seconds: float = 0.0


def reboot_indicators(state: HostState) -> dict[str, object]:
    """What the agent's `system.reboot_state` reads from `state` (without `last_boot`): the two
    keys' existence and the PendingFileRenameOperations strings (first 64) and their count."""
    with state.lock:
        cbs = state.get_key(CBS_REBOOT_PENDING) is not None
        wu = state.get_key(WU_REBOOT_REQUIRED) is not None
        key = state.get_key(SESSION_MANAGER)
        value = key.values.get(PENDING_RENAMES.lower()) if key is not None else None
    data = value.data if value is not None else []
    strings = [str(s) for s in data] if isinstance(data, list) else [str(data)]
    return {"cbs_reboot_pending": cbs, "wu_reboot_required": wu, "pending_file_renames": strings[:64],
            "pending_file_renames_count": len(strings)}


def register_at_boot(state: HostState, changes: Changes) -> list[str]:
    """Register the files of `changes` as MoveFileEx(MOVEFILE_DELAY_UNTIL_REBOOT |
    MOVEFILE_REPLACE_EXISTING) renames: a staged `<path>.kbfix-pending` → `!<path>` pair each,
    appended to PendingFileRenameOperations. Returns the pairs added (flattened)."""
    pairs: list[str] = []
    for fe in changes.files:
        path = state.expand(fe.path)
        pairs += [f"\\??\\{path}.kbfix-pending", f"!\\??\\{path}"]
    if pairs:
        with state.lock:
            key = state.get_key(SESSION_MANAGER)
            old = key.values.get(PENDING_RENAMES.lower()) if key is not None else None
            current = list(old.data) if old is not None and isinstance(old.data, list) else []
            state.set_value(SESSION_MANAGER, PENDING_RENAMES, current + pairs, "REG_MULTI_SZ")
    return pairs


class PowerState:
    """One emulated host's power: `boot_time` (UTC), `up`, the changes due at the next boot, and
    subscribers told of every transition (`callback(up: bool)`; the WS-Man server closes or
    reopens the host's listener). Thread-safe."""

    def __init__(self, state: HostState, spec: BootSpec, time_scale: float) -> None:
        self.state = state
        self.spec = spec
        self.time_scale = time_scale
        self.boot_time: datetime = spec.last_boot
        self.up = True
        self.restarts = 0
        self._at_boot: list[Changes] = []
        self._subscribers: list[Callable[[bool], None]] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._scheduled = False

    def subscribe(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(up)` at each transition (from a timer thread)."""
        with self._lock:
            self._subscribers.append(callback)

    def add_at_boot(self, changes: Changes) -> None:
        """Changes Windows applies at the next boot (an installer's `at_boot:`); their files are
        also registered in PendingFileRenameOperations, as MoveFileEx does."""
        register_at_boot(self.state, changes)
        with self._lock:
            self._at_boot.append(changes)

    def request_restart(self, delay_s: float) -> bool:
        """shutdown.exe /r /t delay_s: schedule the restart. Returns False when one is already
        scheduled (Windows answers "A system shutdown has already been scheduled", 1190)."""
        with self._lock:
            if self._scheduled:
                return False
            self._scheduled = True
        down_in = max(MIN_SHUTDOWN_S, (delay_s + self.spec.shutdown_seconds) * self.time_scale)
        self._start_timer(down_in, self._go_down)
        return True

    def _start_timer(self, seconds: float, fn: Callable[[], None]) -> None:
        t = threading.Timer(seconds, fn)
        t.daemon = True
        with self._lock:
            self._timers.append(t)
        t.start()

    def _notify(self, up: bool) -> None:
        with self._lock:
            subs = list(self._subscribers)
        for cb in subs:
            cb(up)

    def _go_down(self) -> None:
        with self._lock:
            self.up = False
        self._notify(False)
        if self.spec.comes_back:
            self._start_timer(self.spec.reboot_seconds * self.time_scale, self._come_back)

    def _come_back(self) -> None:
        with self._lock:
            pending, self._at_boot = self._at_boot, []
        with self.state.lock:
            for changes in pending:
                changes.apply(self.state)
            # Session Manager performs the renames and the value is gone; servicing removes its keys.
            key = self.state.get_key(SESSION_MANAGER)
            if key is not None:
                key.values.pop(PENDING_RENAMES.lower(), None)
            self.state.delete_key(CBS_REBOOT_PENDING)
            if self.spec.delayed_start_seconds <= 0:
                self.state.delete_key(WU_REBOOT_REQUIRED)
        with self._lock:
            self.boot_time = datetime.now(timezone.utc).replace(microsecond=0)
            self.restarts += 1
            self.up = True
            self._scheduled = False
        self._notify(True)
        if self.spec.delayed_start_seconds > 0:
            self._start_timer(self.spec.delayed_start_seconds * self.time_scale, self._delayed_services_start)

    def _delayed_services_start(self) -> None:
        """wuauserv starts (delayed auto-start) and clears its RebootRequired key."""
        with self.state.lock:
            self.state.delete_key(WU_REBOOT_REQUIRED)

    def cancel(self) -> None:
        """Stop pending timers (lab shutdown)."""
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
