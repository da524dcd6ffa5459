"""Remote shells and their commands for one emulated host: quotas, idle expiry, stdin, process runs.

A `ShellTable` holds the open shells of one host (Windows Remote Shell semantics, MS-WSMV 3.1.4.1:
a shell owns commands; a command receives stdin through Send and yields output through Receive).
Each command's process runs `LabHost.execute` in its own worker thread once its stdin is complete
(`Send End="true"`, or at the first Receive when no stdin was ever sent). Output is handed out in
chunks that fit the client's MaxEnvelopeSize.

Idle shells expire lazily (checked on every table access; no timer thread per host) after the
smaller of the host's `idle_timeout_s` and the shell's requested IdleTimeOut.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from winlab.hostapi import LabHost, ProcessResult


@dataclass
class Command:
    """One command in a shell. `stdin` accumulates Send chunks; `result` is set when the process ends."""

    command_id: str
    command: str
    args: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_seen: bool = False
    stdin_closed: bool = False
    started: bool = False
    result: ProcessResult | None = None
    stdout_pos: int = 0
    stderr_pos: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    receives: int = 0
    dropped: bool = False


@dataclass
class Shell:
    """One open shell: owner (normalised user), codepage, environment, idle limit (s), commands."""

    shell_id: str
    owner: str
    codepage: int
    env: dict[str, str]
    idle_limit_s: float
    last_used: float
    commands: dict[str, Command] = field(default_factory=dict)


class ShellError(Exception):
    """A shell-level refusal. kind: `not_found`, `quota`, `access_denied`, `stopped`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


class ShellTable:
    """The shells of one host. Thread-safe: one lock guards the table, one condition wakes Receives.

    host: the `LabHost` (its records, quotas and `execute`). All times are seconds (monotonic clock).
    """

    def __init__(self, host: LabHost) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._shells: dict[str, Shell] = {}
        self._threads: set[threading.Thread] = set()
        self._stopping = False

    # ------------------------------------------------------------------------------------ shells

    def _expire_locked(self, now: float) -> None:
        for shell_id in [s.shell_id for s in self._shells.values() if now - s.last_used > s.idle_limit_s]:
            self._close_locked(shell_id)

    def _close_locked(self, shell_id: str) -> None:
        shell = self._shells.pop(shell_id)
        for cmd in shell.commands.values():
            cmd.cancel.set()
        self.host.records.shell_closed()
        self._changed.notify_all()

    def open_count(self) -> int:
        """Open shells after expiring idle ones."""
        with self._lock:
            self._expire_locked(time.monotonic())
            return len(self._shells)

    def create(self, owner: str, codepage: int, env: Mapping[str, str], idle_timeout_s: float | None,
               quota_fault: bool) -> str:
        """Open a shell for `owner`; returns its ShellId (upper-case GUID, as Windows writes it).

        Raises ShellError('quota') when the owner already has `max_shells_per_user` shells or the
        host's `quota` fault is on.
        """
        with self._lock:
            if self._stopping:
                raise ShellError("stopped")
            now = time.monotonic()
            self._expire_locked(now)
            mine = sum(1 for s in self._shells.values() if s.owner == owner)
            if quota_fault or mine >= self.host.max_shells_per_user:
                raise ShellError("quota")
            limit = float(self.host.idle_timeout_s)
            if idle_timeout_s is not None and idle_timeout_s > 0:
                limit = min(limit, idle_timeout_s)
            shell_id = str(uuid.uuid4()).upper()
            self._shells[shell_id] = Shell(shell_id, owner, codepage, dict(env), limit, now)
            self.host.records.shell_opened()
            return shell_id

    def _shell_locked(self, shell_id: str | None, owner: str) -> Shell:
        self._expire_locked(time.monotonic())
        shell = self._shells.get(shell_id or "")
        if shell is None:
            raise ShellError("not_found", shell_id or "")
        if shell.owner != owner:
            raise ShellError("access_denied")
        shell.last_used = time.monotonic()
        return shell

    def delete(self, shell_id: str | None, owner: str) -> None:
        """Close a shell and cancel its commands. Raises ShellError('not_found'|'access_denied')."""
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            self._close_locked(shell.shell_id)

    # ---------------------------------------------------------------------------------- commands

    def command(self, shell_id: str | None, owner: str, command: str, args: list[str]) -> str:
        """Register a command (not yet started); returns its CommandId."""
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            cmd = Command(str(uuid.uuid4()).upper(), command, args)
            shell.commands[cmd.command_id] = cmd
            return cmd.command_id

    def _command_locked(self, shell: Shell, command_id: str | None) -> Command:
        cmd = shell.commands.get(command_id or "")
        if cmd is None:
            raise ShellError("not_found", command_id or "")
        return cmd

    def send(self, shell_id: str | None, owner: str, command_id: str | None, data: bytes, end: bool) -> None:
        """Append stdin; `end` closes stdin and starts the process."""
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            cmd = self._command_locked(shell, command_id)
            if cmd.stdin_closed:
                return  # Windows ignores input after End; nothing reads it
            cmd.stdin.extend(data)
            cmd.stdin_seen = True
            if end:
                cmd.stdin_closed = True
                self._start_locked(shell, cmd)
            self._changed.notify_all()

    def signal(self, shell_id: str | None, owner: str, command_id: str | None, terminate: bool) -> None:
        """terminate: cancel and forget the command; ctrl_c: only set its cancel Event."""
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            cmd = shell.commands.get(command_id or "")
            if cmd is None:
                return  # a terminate after the command was already cleaned up is harmless on Windows too
            cmd.cancel.set()
            if terminate:
                del shell.commands[cmd.command_id]
            self._changed.notify_all()

    def _start_locked(self, shell: Shell, cmd: Command) -> None:
        if cmd.started:
            return
        cmd.started = True
        stdin = bytes(cmd.stdin)
        thread = threading.Thread(
            target=self._run, args=(cmd, stdin, dict(shell.env), shell.codepage),
            name=f"winlab-proc-{self.host.name}", daemon=True,
        )
        cmd.thread = thread
        self._threads.add(thread)
        thread.start()

    def _run(self, cmd: Command, stdin: bytes, env: dict[str, str], codepage: int) -> None:
        try:
            result = self.host.execute(cmd.command, list(cmd.args), stdin, env, codepage, cmd.cancel)
        except Exception as exc:  # a host bug must not kill the lab; report it like a crashed process
            result = ProcessResult(b"", f"winlab: process failed: {type(exc).__name__}: {exc}\r\n".encode(), 1)
        with self._lock:
            cmd.result = result
            self._threads.discard(threading.current_thread())
            self._changed.notify_all()

    def check(self, shell_id: str | None, owner: str, command_id: str | None) -> None:
        """Validate a Receive's shell and command (and start a process that never got stdin), for
        Receives that a fault answers instead of `receive`. Raises ShellError like `receive`."""
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            cmd = self._command_locked(shell, command_id)
            if not cmd.started and not cmd.stdin_seen:
                self._start_locked(shell, cmd)

    def receive(self, shell_id: str | None, owner: str, command_id: str | None, timeout_s: float,
                chunk_bytes: int) -> tuple[bytes, bytes, bool, ProcessResult | None, int]:
        """Long-poll for output: waits up to `timeout_s` for the process to finish.

        Returns (stdout_chunk, stderr_chunk, done, result, receive_number); `done` is True on the
        Receive that hands out the last chunk. Raises ShellError('timeout') when nothing arrived in
        time, ShellError('drop') once when the result asks for a dropped connection,
        ShellError('not_found'|'access_denied'|'stopped') otherwise.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            shell = self._shell_locked(shell_id, owner)
            cmd = self._command_locked(shell, command_id)
            cmd.receives += 1
            number = cmd.receives
            if not cmd.started and not cmd.stdin_seen:
                self._start_locked(shell, cmd)  # no stdin was ever sent: run with empty stdin
            while cmd.result is None:
                if self._stopping:
                    raise ShellError("stopped")
                if cmd.cancel.is_set() and (
                    shell.shell_id not in self._shells or cmd.command_id not in shell.commands
                ):
                    raise ShellError("not_found", shell.shell_id)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    shell.last_used = time.monotonic()
                    raise ShellError("timeout")
                self._changed.wait(remaining)
            shell.last_used = time.monotonic()
            result = cmd.result
            if result.drop_connection and not cmd.dropped:
                cmd.dropped = True  # fault drop_after_mutation: the answer carrying the output is lost once
                raise ShellError("drop")
            out = result.stdout[cmd.stdout_pos : cmd.stdout_pos + chunk_bytes]
            cmd.stdout_pos += len(out)
            err = result.stderr[cmd.stderr_pos : cmd.stderr_pos + max(0, chunk_bytes - len(out))]
            cmd.stderr_pos += len(err)
            done = cmd.stdout_pos >= len(result.stdout) and cmd.stderr_pos >= len(result.stderr)
            return out, err, done, result, number

    # ------------------------------------------------------------------------------------- stop

    def stop(self, join_timeout_s: float = 2.0) -> None:
        """Close every shell, cancel every process, wake every Receive; join process threads
        (bounded by `join_timeout_s` in total)."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
            for shell_id in list(self._shells):
                self._close_locked(shell_id)
            self._changed.notify_all()
        deadline = time.monotonic() + join_timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
