"""Test support for the lab server tests: a small `LabHost` stand-in (no tests here).

`EchoHost` implements `winlab.hostapi.LabHost` with a few cmd.exe-like commands so the server can
be exercised through HTTP with the real pywinrm client before/without the full emulated host.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from winlab.faults import Faults
from winlab.hostapi import ProcessResult
from winlab.records import HostRecords

ACCOUNT = "LAB\\kbfix"
PASSWORD = "Secret-1"


@dataclass
class EchoHost:
    """A LabHost stand-in. Commands: `hostname`; `echo ARGS`; `more` (stdin → stdout); `sleep S`
    (cooperative, stops on cancel); `env NAME` (the shell variable, and the codepage on stderr);
    `fail` (stderr, exit 3); `big N` (N bytes of 'x'); `mutate` (asks the server to drop the
    connection, fault drop_after_mutation); anything else: cmd.exe's unknown-command text, exit 1."""

    name: str = "HOST01"
    accounts: Mapping[str, str] = field(default_factory=lambda: {ACCOUNT: PASSWORD})
    faults: Faults = field(default_factory=Faults)
    max_envelope_kb: int = 500
    max_shells_per_user: int = 30
    idle_timeout_s: float = 7200.0
    records: HostRecords = field(default_factory=HostRecords)
    calls: list[tuple[str, list[str], bytes, dict[str, str], int]] = field(default_factory=list)

    def execute(self, command: str, args: list[str], stdin: bytes, env: Mapping[str, str], codepage: int,
                cancel: threading.Event) -> ProcessResult:
        self.records.process_started()
        self.calls.append((command, list(args), stdin, dict(env), codepage))
        words = " ".join(args).split()
        if command == "hostname":
            return ProcessResult(self.name.encode() + b"\r\n", b"", 0)
        if command == "echo":
            return ProcessResult(" ".join(args).encode() + b"\r\n", b"", 0)
        if command == "more":
            return ProcessResult(stdin, b"", 0)
        if command == "sleep":
            cancelled = cancel.wait(float(words[0]) if words else 1.0)
            return ProcessResult(b"cancelled\r\n" if cancelled else b"slept\r\n", b"", 1 if cancelled else 0)
        if command == "env":
            return ProcessResult(env.get(words[0], "").encode() + b"\r\n", str(codepage).encode(), 0)
        if command == "fail":
            return ProcessResult(b"", b"it failed\r\n", 3)
        if command == "big":
            return ProcessResult(b"x" * int(words[0]), b"", 0)
        if command == "mutate":
            return ProcessResult(b"changed\r\n", b"", 0, drop_connection=True)
        text = f"'{command}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
        return ProcessResult(b"", text.encode(), 1)
