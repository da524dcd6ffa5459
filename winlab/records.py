"""What the lab saw, per emulated host: the evidence tests and benchmarks read.

One `HostRecords` per host, shared by the WS-Man server (requests, shells, bytes) and the
agent emulator (powershell starts, mutating ops). Thread-safe: every mutation takes the lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MutationRecord:
    """One mutating agent op the lab executed: op name, short detail (no secrets), wall time (epoch s)."""

    op: str
    detail: str
    at: float


@dataclass
class HostRecords:
    """Counters for one host. `requests` counts HTTP requests by WS-Man action short name
    (`Create`, `Command`, `Send`, `Receive`, `Signal`, `Delete`, `Other`, `Auth` for 401
    handshakes); bytes are HTTP body bytes in and out."""

    requests: Counter[str] = field(default_factory=Counter)
    shells_opened: int = 0
    shells_open: int = 0
    processes_started: int = 0
    mutations: list[MutationRecord] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    log_scans: Counter[str] = field(default_factory=Counter)  # named file (lower case) → times log.scan read it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, action: str, bytes_in: int, bytes_out: int) -> None:
        """Count one HTTP request/response pair."""
        with self._lock:
            self.requests[action] += 1
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def shell_opened(self) -> None:
        """A Create succeeded."""
        with self._lock:
            self.shells_opened += 1
            self.shells_open += 1

    def shell_closed(self) -> None:
        """A shell was deleted or expired."""
        with self._lock:
            self.shells_open -= 1

    def process_started(self) -> None:
        """A Command started a (emulated) process such as powershell.exe."""
        with self._lock:
            self.processes_started += 1

    def mutated(self, op: str, detail: str) -> None:
        """A mutating agent op ran against the host state."""
        with self._lock:
            self.mutations.append(MutationRecord(op, detail, time.time()))

    def log_scanned(self, path: str) -> None:
        """Count one log.scan of the named file `path` (case-insensitive)."""
        with self._lock:
            self.log_scans[path.lower()] += 1

    def fault(self, name: str) -> None:
        """An injected fault fired."""
        with self._lock:
            self.faults_injected[name] += 1

    @property
    def total_requests(self) -> int:
        """All HTTP requests seen, including authentication handshakes."""
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "shells_opened": self.shells_opened,
                "shells_open": self.shells_open,
                "processes_started": self.processes_started,
                "mutations": [m.__dict__ for m in self.mutations],
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "faults_injected": dict(self.faults_injected),
            }
