"""The contract between the lab's WS-Management server and an emulated host.

The server (`winlab.server`/`winlab.wsman`) speaks HTTP, authentication and WS-Man; it knows a
host only through `LabHost`. The host side (`winlab.host.EmulatedHost`) owns the state and runs
the emulated processes (the kbfix agent, or cmd.exe's answer to anything else).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from winlab.faults import Faults
from winlab.records import HostRecords


@dataclass(frozen=True)
class ProcessResult:
    """What an emulated process wrote and returned.

    stdout/stderr: raw bytes as the process wrote them (the server base64-encodes them into
    Receive streams); exit_code: the process exit code; drop_connection: the server must close
    the TCP connection instead of answering the next Receive (fault `drop_after_mutation`).
    """

    stdout: bytes
    stderr: bytes
    exit_code: int
    drop_connection: bool = False


class LabHost(Protocol):
    """One emulated Windows host as the WS-Man server sees it.

    accounts: user → password; the server matches user names case-insensitively and accepts
    `DOMAIN\\user`, `user@DOMAIN` and bare `user` forms. max_envelope_kb / max_shells_per_user /
    idle_timeout_s are the WinRM service settings (Windows defaults 500 KB (WinRM 2.0+;
    150 KB on 1.1), 30 shells (5 on WinRM 1.1), 7200 s: MS docs "Installation and configuration for
    Windows Remote Management", Quota Management).

    Optional: a `power` attribute (`winlab.power.PowerState`) with `subscribe(callback(up))`; the
    server stops listening while the host restarts (connection refused) and listens again after.
    """

    name: str
    accounts: Mapping[str, str]
    faults: Faults
    max_envelope_kb: int
    max_shells_per_user: int
    idle_timeout_s: float
    records: HostRecords

    def execute(
        self,
        command: str,
        args: list[str],
        stdin: bytes,
        env: Mapping[str, str],
        codepage: int,
        cancel: threading.Event,
    ) -> ProcessResult:
        """Run one command to completion (blocking; may sleep for simulated time).
        `cancel` is set when the client signals terminate/ctrl_c; a cooperative process stops early."""
        ...
