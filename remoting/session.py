"""One host's remoting session: one WinRM shell, the agent run in one powershell.exe per request,
check mode enforced before anything is sent, and no shell ever left open.

Data path (remoting/PROTOCOL.md): Create (codepage 437, no profile) → per `run()`: Command
`powershell.exe … -EncodedCommand <bootstrap>` → Send the agent and the request on stdin in
chunks that fit MaxEnvelopeSize → Receive until Done (long-poll timeouts re-polled, never past
the command deadline) → decode the framed response. On leaving the `with` block, whatever
happened (success, error, Ctrl-C): Signal terminate for a command still running, then Delete.

Usage::

    with AgentSession(endpoint) as s:          # check_mode=True: read-only ops only
        resp = s.run([op("1", "file.info", path=r"%windir%\\notepad.exe")])
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from types import TracebackType

from remoting.agent_delivery import command_line, stdin_base64
from remoting.agent_protocol import (
    DEFAULT_RESPONSE_LIMIT,
    AgentRequest,
    AgentResponse,
    OpRequest,
    decode_response,
    encode_request,
)
from remoting.chunking import DEFAULT_MAX_ENVELOPE_SIZE, split_base64
from remoting.endpoint import Endpoint
from remoting.errors import (
    AgentError,
    CheckModeViolation,
    CommandTimeoutError,
    OutcomeUnknownError,
    RemotingError,
    ResponseTooLargeError,
)
from remoting.retry import RetryPolicy, call_with_retry
from remoting.wsman_client import SessionStats, WsmanClient

log = logging.getLogger(__name__)

__all__ = ["AgentSession", "SessionStats"]

#: stderr bytes kept per command: the tail, where PowerShell's last error record is. A host that
#: streams stderr and never finishes grew the controller by ~11 MB/s before (issue 20 finding 3).
STDERR_KEEP = 64 * 1024

_CLIXML_MARK = b"#< CLIXML\r\n"
_CLIXML_TEXT = re.compile(r'<S S="Error">(.*?)</S>', re.S)
_CLIXML_ESC = re.compile(r"_x([0-9A-Fa-f]{4})_")


def stderr_text(stderr: bytes, limit: int = 500) -> str:
    """Readable text of a PowerShell stderr stream (plain, or CLIXML error records), cut to `limit` chars."""
    text = stderr.decode("utf-8", "replace")
    if "#< CLIXML" in text:
        parts = _CLIXML_TEXT.findall(text)
        text = _CLIXML_ESC.sub(lambda m: chr(int(m.group(1), 16)), "".join(parts))
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


class AgentSession:
    """A WinRM session to one host that runs agent requests (context manager).

    endpoint: where and how to connect; check_mode: True (the default) refuses any mutating op
    with CheckModeViolation before any byte is sent; retry: the policy for Create and for
    read-only runs; max_envelope_size: bytes per WS-Man envelope (stdin chunking);
    response_limit: cap on the agent's response document, bytes.

    `stats` counts WS-Man requests, bytes and commands for this session.
    Construction raises InsecureTransportError/ConfigurationError for refused settings (no I/O).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        check_mode: bool = True,
        retry: RetryPolicy | None = None,
        max_envelope_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
        response_limit: int = DEFAULT_RESPONSE_LIMIT,
    ) -> None:
        self.endpoint = endpoint
        self.check_mode = check_mode
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_envelope_size = max_envelope_size
        self.response_limit = response_limit
        self.stats = SessionStats()
        self._client = WsmanClient(endpoint, self.stats)  # validates settings; opens nothing yet
        self._shell_id: str | None = None
        self._command_id: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AgentSession:
        """Open the one shell (Create), retrying refused/reset connections and HTTP 5xx."""

        def note_retry(exc: BaseException) -> None:
            self.stats.retries += 1
            log.info("%s: retrying Create after: %s", self.endpoint.host, exc)

        idle_s = self.endpoint.timeouts.command + 120  # a shell orphaned by a lost network still expires
        try:
            self._shell_id = call_with_retry(
                lambda: self._client.open_shell(idle_timeout_s=idle_s), self.retry, before_retry=note_retry
            )
        except BaseException:
            self._client.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Always: Signal terminate for a running command, Delete the shell, close the connection.
        Cleanup failures are logged, never raised over the original outcome."""
        self.close()

    def close(self) -> None:
        """Terminate any running command, delete the shell and drop the HTTP connection (idempotent)."""
        try:
            self._abandon_command()
            if self._shell_id is not None:
                shell, self._shell_id = self._shell_id, None
                try:
                    self._client.delete_shell(shell)
                except RemotingError as exc:
                    log.warning("%s: could not delete shell %.80s: %s", self.endpoint.host, shell, exc)
        finally:
            self._client.close()

    def _abandon_command(self, _exc: BaseException | None = None) -> None:
        if self._command_id is None or self._shell_id is None:
            self._command_id = None
            return
        cmd, self._command_id = self._command_id, None
        try:
            self._client.terminate(self._shell_id, cmd)
        except RemotingError as exc:
            log.warning("%s: could not signal command %.80s to stop: %s", self.endpoint.host, cmd, exc)

    # ------------------------------------------------------------------ running the agent

    def run(self, ops: Sequence[OpRequest], *, deadline_s: float | None = None) -> AgentResponse:
        """Run `ops` in one agent invocation and return the decoded response.

        deadline_s: seconds the whole command may take (default: endpoint.timeouts.command, or
        longer when an `installer.run` op carries a longer `timeout`, see `deadline_for`).
        Raises CheckModeViolation (nothing sent) for a mutating op in check mode; ValueError for
        duplicate op ids; CommandTimeoutError, AgentError, ResponseTooLargeError and the mapped
        WS-Man errors; OutcomeUnknownError when a request carrying a mutating op lost its answer
        after its stdin was sent, whatever the cause (dropped connection, 5xx, timeout, garbled
        answer; the cause is chained): it is never re-sent. A failure before that point (Command
        refused) raises the mapped error: nothing ran. Read-only requests are retried on
        transient faults per `self.retry`.
        """
        request = AgentRequest(tuple(ops), limit=self.response_limit)
        mutating_ids, names = _facts(request.ops)
        if mutating_ids and self.check_mode:
            # First of all: a check-mode session refuses even before asking whether it is open.
            raise CheckModeViolation(
                f"check mode: refusing to send mutating op(s) {', '.join(mutating_ids)}; nothing was sent",
                host=self.endpoint.host,
            )
        doc = encode_request(request)  # raises ValueError on duplicate ids, before any I/O
        if self._shell_id is None:
            raise RuntimeError("AgentSession.run() needs an open session: use `with AgentSession(...) as s`")
        if deadline_s is not None:
            deadline = deadline_s
        elif "installer.run" in names:
            deadline = deadline_for(request.ops, self.endpoint.timeouts.command)
        else:
            deadline = self.endpoint.timeouts.command
        if mutating_ids:
            return self._run_once(request, doc, deadline, mutating_ids, names)

        def before_retry(exc: BaseException) -> None:
            self.stats.retries += 1
            log.info("%s: retrying read-only agent run after: %s", self.endpoint.host, exc)
            self._abandon_command()

        return call_with_retry(lambda: self._run_once(request, doc, deadline, (), names), self.retry,
                               before_retry=before_retry)

    def _run_once(
        self, request: AgentRequest, doc: bytes, deadline_s: float, mutating_ids: tuple[str, ...],
        names: tuple[str, ...],
    ) -> AgentResponse:
        assert self._shell_id is not None
        started = time.monotonic()
        # The agent travels with only the sections this request's ops use (a check's has no change
        # ops); the stream goes straight to base64, as the Send envelopes carry it.
        chunks = split_base64(stdin_base64(doc, ops=names), self.max_envelope_size)
        command, args = command_line()
        self._command_id = self._client.run_command(self._shell_id, command, args)
        self.stats.commands += 1
        try:
            for i, chunk in enumerate(chunks):
                self._client.send_base64(self._shell_id, self._command_id, chunk, end=i == len(chunks) - 1)
            stdout, stderr, exit_code = self._collect(started + deadline_s, deadline_s)
        except RemotingError as exc:
            if mutating_ids:
                # The mutating op may have run: never send it again, let the caller re-read state.
                raise OutcomeUnknownError(
                    f"the request carrying {', '.join(mutating_ids)} was sent but its answer was lost "
                    f"({exc.message}); re-read the host's state to learn the outcome",
                    host=self.endpoint.host,
                    op_ids=mutating_ids,
                ) from exc
            raise
        return self._decode(stdout, stderr, exit_code, request)

    def _collect(self, end_at: float, deadline_s: float) -> tuple[bytes, bytes, int]:
        """Receive until Done; stop the command past `end_at` (monotonic s) or past the output cap.

        Memory is bounded whatever the host sends: stdout up to the response cap (past it the
        command is stopped: ResponseTooLargeError), stderr to its last `STDERR_KEEP` bytes.
        Returns (stdout, stderr tail, exit code).
        """
        assert self._shell_id is not None and self._command_id is not None
        cap = self.response_limit * 4 // 3 + 4096  # base64 of the document plus framing/stray text
        out: list[bytes] = []
        err = bytearray()
        size = 0
        while True:
            remaining = end_at - time.monotonic()
            if remaining <= 0:
                self._abandon_command()
                raise CommandTimeoutError(
                    f"the agent did not finish within {deadline_s:g} s and was stopped", host=self.endpoint.host
                )
            answer = self._client.receive(self._shell_id, self._command_id, remaining)
            if answer is None:
                continue  # the expected long-poll expiry: poll again while the deadline allows
            out.append(answer.stdout)
            err += answer.stderr[-STDERR_KEEP:]
            if len(err) > STDERR_KEEP:
                clixml = err.startswith(_CLIXML_MARK)
                del err[: len(err) - STDERR_KEEP]  # keep the tail
                if clixml and not err.startswith(_CLIXML_MARK):
                    err[:0] = _CLIXML_MARK  # still read as error records (stderr_text)
            size += len(answer.stdout)
            if size > cap:
                self._abandon_command()
                raise ResponseTooLargeError(
                    f"the agent's output passed {cap} bytes; the rest was not read", host=self.endpoint.host
                )
            if answer.done:
                self._command_id = None  # finished: nothing left to signal
                return b"".join(out), bytes(err), answer.exit_code

    def _decode(self, stdout: bytes, stderr: bytes, exit_code: int, request: AgentRequest) -> AgentResponse:
        host = self.endpoint.host
        framed = f"KBFIX-END-{request.nonce}".encode("ascii") in stdout
        if exit_code != 0 and not framed:
            detail = stderr_text(stderr) or "no error text"
            raise AgentError(f"the agent failed (exit code {exit_code}): {detail}", host=host)
        return decode_response(stdout, request.nonce, limit=request.limit, host=host)


def deadline_for(ops: Sequence[OpRequest], default_s: float) -> float:
    """A command deadline (seconds) that leaves room for the longest `installer.run` timeout in `ops`."""
    longest = 0.0
    for o in ops:
        if o.name == "installer.run":
            longest = max(longest, float(o.integer("timeout", 1800)))
    return max(default_s, math.ceil(longest) + 60) if longest else default_s


#: (ops tuple, its facts): the last ops `run` looked at. A check sends the same tuple of frozen
#: ops to every host (as `agent_protocol._op_lines` notes), so its facts are worked out once.
#: The tuple is held, so its id cannot be reused while it is cached; a tuple assignment is
#: atomic, so threads only ever see a matching pair.
_LAST_FACTS: tuple[tuple[OpRequest, ...], tuple[tuple[str, ...], tuple[str, ...]]] | None = None


def _facts(ops: tuple[OpRequest, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ids of the mutating ops, op names) of `ops`."""
    global _LAST_FACTS
    last = _LAST_FACTS
    if last is not None and last[0] is ops:
        return last[1]
    facts = (tuple(o.id for o in ops if o.mutating), tuple(o.name for o in ops))
    _LAST_FACTS = (ops, facts)
    return facts
