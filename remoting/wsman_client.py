"""The WS-Man layer of remoting: pywinrm's `Protocol` configured from an `Endpoint`, one method
per WS-Man operation, request counting, and the mapping of pywinrm/requests exceptions into the
typed errors of `remoting.errors`.

It knows nothing about the agent; `remoting.session` drives it. Each method either returns or
raises a `RemotingError` carrying the host and, for SOAP faults, the WSManFault code.
Fault codes: [MS-WSMV] and WinRM's winrm.h (`ERROR_WSMAN_QUOTA_MAX_SHELLS` 0x803381A5 =
2150859173, `ERROR_WSMAN_OPERATION_TIMEDOUT` 0x80338029 = 2150858793).
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import defusedxml
import defusedxml.ElementTree as ET
import requests
import urllib3.exceptions
import winrm.exceptions as wexc
import winrm.transport
from winrm.protocol import Protocol

from remoting import bounded_http, kerberos
from remoting import wsman_messages as wsm
from remoting.endpoint import Endpoint
from remoting.errors import (
    AuthRejectedError,
    CertificateError,
    ConfigurationError,
    InsecureTransportError,
    MalformedAnswerError,
    OperationTimeoutError,
    QuotaError,
    RemotingError,
    UnreachableError,
    WSManFaultError,
)
from remoting.lean_http import LEAN_TRANSPORTS, LeanSender

log = logging.getLogger(__name__)
T = TypeVar("T")

QUOTA_FAULT_CODES = frozenset({2150859173, 2150859174})  # 0x803381A5 MaxShellsPerUser, 0x803381A6 MaxConcurrentOperations…
TIMED_OUT_FAULT_CODE = 2150858793  # 0x80338029 ERROR_WSMAN_OPERATION_TIMEDOUT
_SUPPORTED_TRANSPORTS = ("ntlm", "kerberos", "basic", "credssp")


@dataclass
class SessionStats:
    """What one session cost on the wire: WS-Man requests sent (authentication handshakes not
    included), envelope bytes sent/received, agent commands started, retries taken."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    commands: int = 0
    retries: int = 0


@dataclass(frozen=True)
class ReceiveResult:
    """One Receive answer: output bytes so far, exit code (-1 until done) and whether the command is done."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    done: bool


SHELL_CODEPAGE = 437  # OEM US, pywinrm's default; see WsmanClient.open_shell (issue 13 item 3)

class _CountingProtocol(Protocol):
    """pywinrm's Protocol, counting every WS-Man message into a `SessionStats`."""

    stats: SessionStats

    def send_message(self, message: str) -> bytes:  # type: ignore[override]
        body = message.encode("utf-8") if isinstance(message, str) else message
        self.stats.requests += 1
        self.stats.bytes_sent += len(body)
        response = super().send_message(message)
        self.stats.bytes_received += len(response)
        return response


def check_endpoint(endpoint: Endpoint) -> None:
    """Refuse settings that would leak credentials or cannot work, before any connection.

    Raises InsecureTransportError for Basic auth or message_encryption "never" over plain HTTP
    without `allow_unencrypted`, and ConfigurationError for an unsupported transport, a missing
    username/password, or timeouts pywinrm rejects (read must exceed operation)."""
    host = endpoint.host
    if endpoint.transport not in _SUPPORTED_TRANSPORTS:
        raise ConfigurationError(f"authentication transport {endpoint.transport!r} is not supported", host=host)
    if endpoint.scheme == "http" and not endpoint.allow_unencrypted:
        if endpoint.transport == "basic":
            raise InsecureTransportError(
                "refusing Basic authentication over plain HTTP: the password would cross the network "
                "unencrypted (use https, or set allow_unencrypted for a lab)",
                host=host,
            )
        if endpoint.message_encryption == "never":
            raise InsecureTransportError(
                "refusing message_encryption 'never' over plain HTTP (use https, or set allow_unencrypted)",
                host=host,
            )
    if endpoint.transport == "basic" and endpoint.message_encryption == "always":
        raise ConfigurationError("Basic authentication cannot encrypt messages; use https or NTLM/Kerberos", host=host)
    if endpoint.transport == "credssp" and not winrm.transport.HAVE_CREDSSP:
        raise ConfigurationError("CredSSP needs the requests-credssp package, which is not installed", host=host)
    if endpoint.transport == "kerberos":
        kerberos.check_kerberos(endpoint)  # the extra installed, a user@REALM name
    if endpoint.transport != "kerberos" and (not endpoint.username or endpoint.password is None):
        raise ConfigurationError(f"transport {endpoint.transport} needs a username and a password", host=host)
    t = endpoint.timeouts
    if min(t.connect, t.operation, t.read, t.command) <= 0:
        raise ConfigurationError("timeouts must be positive", host=host)
    if t.operation < 1 or math.ceil(t.read) <= math.ceil(t.operation):
        raise ConfigurationError(
            f"read timeout ({t.read:g} s) must exceed the operation timeout ({t.operation:g} s, at least 1 s)", host=host
        )


def _root_causes(exc: BaseException) -> list[BaseException]:
    """The exception and its chained causes/contexts plus urllib3's `reason`, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        cur = todo.pop(0)
        if cur in seen:
            continue
        seen.append(cur)
        for nxt in (getattr(cur, "reason", None), cur.__cause__, cur.__context__, *cur.args[:1]):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return seen


def _cert_reason(exc: BaseException) -> str:
    for cause in _root_causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or "verification failed"
    text = str(exc)
    marker = "certificate verify failed:"
    i = text.find(marker)
    return text[i + len(marker) :].split(")")[0].strip() if i >= 0 else "TLS handshake failed"


def map_exception(exc: BaseException, endpoint: Endpoint, action: str) -> RemotingError:
    """Translate a pywinrm/requests exception raised during WS-Man `action` (e.g. "Create") into
    the typed remoting error, with host, fault code and `transient` (safe to repeat) set."""
    host = endpoint.host
    where = f"{endpoint.address}:{endpoint.effective_port}"
    if isinstance(exc, RemotingError):
        return exc
    if isinstance(exc, bounded_http.AnswerTooLargeError):
        return MalformedAnswerError(
            f"the host's answer to {action} was larger than {bounded_http.DEFAULT_MAX_BODY} bytes: refused unread",
            host=host,
        )
    if isinstance(exc, (ET.ParseError, xml.parsers.expat.ExpatError, defusedxml.DefusedXmlException,
                        wsm.UnsafeXmlError, wsm.AnswerXmlError)):
        return MalformedAnswerError(f"the host's answer to {action} is not well-formed WS-Man XML", host=host)
    if isinstance(exc, wexc.AuthenticationError):
        return AuthRejectedError(
            f"the host rejected the credentials ({endpoint.transport}, HTTP 401): check user name, password "
            "and that this authentication method is enabled in WinRM",
            host=host,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return CertificateError(f"the host's TLS certificate is not trusted: {_cert_reason(exc)}", host=host)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return UnreachableError(f"no connection to {where} within {endpoint.timeouts.connect:g} s", host=host)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return UnreachableError(
            f"the host accepted the connection but did not answer {action} within {endpoint.timeouts.read:g} s",
            host=host,
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        causes = _root_causes(exc)
        if any(isinstance(c, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for c in causes):
            return UnreachableError(f"the name {endpoint.address!r} cannot be resolved", host=host)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            err = UnreachableError(f"connection to {where} refused: is WinRM listening on that port?", host=host)
        elif any(isinstance(c, urllib3.exceptions.NewConnectionError) for c in causes):
            err = UnreachableError(f"cannot connect to {where}", host=host)
        else:
            err = UnreachableError(f"the connection to {where} was closed during {action} without an answer", host=host)
        err.transient = True
        return err
    if isinstance(exc, wexc.WinRMOperationTimeoutError):
        return OperationTimeoutError(
            f"the WinRM service timed out on {action} (w:TimedOut)",
            host=host,
            fault_code=TIMED_OUT_FAULT_CODE,
            code="s:Receiver",
            subcode="w:TimedOut",
        )
    if isinstance(exc, wexc.WSManFaultError):
        return _map_fault(exc, endpoint, action)
    if isinstance(exc, wexc.WinRMTransportError):
        if int(exc.code) >= 500:
            err = UnreachableError(f"the WinRM service answered HTTP {exc.code} to {action}", host=host)
            err.transient = True
            return err
        return WSManFaultError(f"the WinRM service answered HTTP {exc.code} to {action}", host=host)
    if isinstance(exc, wexc.WinRMError):
        return ConfigurationError(f"pywinrm refused the settings: {exc}", host=host)
    return RemotingError(f"unexpected {type(exc).__name__} during {action}", host=host)


def _map_fault(exc: wexc.WSManFaultError, endpoint: Endpoint, action: str) -> RemotingError:
    host = endpoint.host
    code = exc.wsman_fault_code if exc.wsman_fault_code is not None else exc.wmierror_code
    subcode = exc.fault_subcode or ""
    reason = " ".join((exc.reason or "").split())
    common: dict[str, Any] = {"host": host, "fault_code": code, "code": exc.fault_code, "subcode": exc.fault_subcode}
    if subcode.endswith("QuotaLimit") or code in QUOTA_FAULT_CODES:
        return QuotaError(f"WinRM quota reached on {action}: {reason}", **common)
    if subcode.endswith("TimedOut") or code == TIMED_OUT_FAULT_CODE:
        return OperationTimeoutError(f"the WinRM service timed out on {action}: {reason}", **common)
    if subcode.endswith("InternalError") and int(exc.code) >= 500:
        err = UnreachableError(f"the WinRM service failed on {action} (HTTP {exc.code}): {reason}", host=host, fault_code=code)
        err.transient = True
        return err
    return WSManFaultError(f"the WinRM service refused {action}: {reason}", **common)


class WsmanClient:
    """One host's WS-Man operations over one pywinrm `Protocol` (one requests.Session, so one
    kept-alive HTTP connection and one authenticated context for the whole session).

    Every method raises a mapped `RemotingError`; `close()` drops the HTTP connection."""

    def __init__(self, endpoint: Endpoint, stats: SessionStats) -> None:
        check_endpoint(endpoint)
        self.endpoint = endpoint
        t = endpoint.timeouts
        try:
            proto = _CountingProtocol(
                endpoint.url,
                transport=endpoint.transport,
                username=endpoint.username,
                # The one place the credential leaves its wrapper: the HTTP authentication layer.
                password=endpoint.password.reveal() if endpoint.password is not None else None,
                ca_trust_path=endpoint.ca_trust_path,  # type: ignore[arg-type]  # None: the system/certifi store, never env vars
                server_cert_validation=endpoint.cert_validation,
                read_timeout_sec=math.ceil(t.read),
                operation_timeout_sec=math.ceil(t.operation),
                message_encryption=endpoint.message_encryption,
                proxy=None,  # WinRM goes direct; an environment proxy must not capture it
                service=endpoint.service,
                kerberos_hostname_override=endpoint.kerberos_hostname_override,
                kerberos_delegation=endpoint.kerberos_delegation,
            )
        except Exception as exc:
            raise map_exception(exc, endpoint, "setup") from exc
        proto.stats = stats
        # requests takes (connect, read) separately; pywinrm passes this value straight through.
        proto.transport.read_timeout_sec = (t.connect, t.read)  # type: ignore[assignment]
        # Every (re)built requests session gets a bounded adapter: a byte cap per answer and a
        # total time per request (requests' read timeout bounds each socket read, not an answer);
        # the lean path's (Basic, NTLM) also skips urllib3 (remoting.direct_http).
        # The adapter goes on before pywinrm's first (authenticating) request when it sets up
        # message encryption: an NTLM context belongs to the TCP connection it was made on.
        lean = endpoint.transport in LEAN_TRANSPORTS
        if lean:
            password = endpoint.password.reveal() if endpoint.password is not None else None
            LeanSender(proto.transport, endpoint.username, password, total_s=t.connect + t.read).install()
        else:
            build, setup = proto.transport.build_session, proto.transport.setup_encryption

            def build_bounded() -> requests.Session:
                if endpoint.transport == "kerberos" and proto.transport.session is None:
                    # pywinrm's own Kerberos path needs pykerberos and kinit; remoting.kerberos uses pyspnego.
                    session = kerberos.build_session(proto.transport, endpoint)
                else:
                    session = build()
                bounded_http.install(session, total_s=t.connect + t.read)
                return session

            def setup_bounded(session: requests.Session) -> None:
                bounded_http.install(session, total_s=t.connect + t.read)
                setup(session)

            proto.transport.build_session = build_bounded  # type: ignore[method-assign]
            proto.transport.setup_encryption = setup_bounded  # type: ignore[method-assign]
        self._proto = proto
        self._operation_s = math.ceil(t.operation)
        self._to = endpoint.url

    def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` with any failure mapped to the typed error for WS-Man `action`."""
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise self._mapped(exc, action) from exc

    def _mapped(self, exc: Exception, action: str) -> RemotingError:
        """Map `exc`; after a broken connection, drop pywinrm's session so the next request
        authenticates afresh: an NTLM-sealed session cannot continue on a new TCP connection
        (the service answers HTTP 400 to a message sealed with the old context)."""
        if isinstance(exc, (requests.exceptions.RequestException, OSError)) and bounded_http.timed_out():
            self._proto.transport.close_session()
            t = self.endpoint.timeouts
            return UnreachableError(
                f"the host did not complete its answer to {action} within {t.connect + t.read:g} s", host=self.endpoint.host
            )
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            self._proto.transport.close_session()
        return map_exception(exc, self.endpoint, action)

    def _exchange(self, action: str, message: wsm.Message) -> wsm.Answer:
        """Send one envelope through pywinrm's Protocol (its transport, authentication, sealing and
        SOAP-fault mapping) and parse the answer; the answer must relate to this request
        (wsa:RelatesTo = our wsa:MessageID, WS-Addressing as [MS-WSMV] uses it)."""
        raw = self._proto.send_message(message.text.encode("utf-8"))  # type: ignore[arg-type]  # (bytes pass through)
        answer = wsm.parse_answer(raw)
        if answer.relates_to is not None and answer.relates_to != message.message_id:
            raise MalformedAnswerError(
                f"the host's answer to {action} relates to another request", host=self.endpoint.host
            )
        return answer

    def open_shell(self, idle_timeout_s: float | None = None) -> str:
        """WS-Man Create: a cmd shell with codepage 437 and no user profile. Returns the ShellId.

        windows (issue 13 item 3): 437, pywinrm's default, not 65001: Windows before Server 2008 R2
        fails on 65001 (chef/knife-windows PR #400; WinRb/WinRM #232: commands return nothing on
        2008 SP2), and every byte of the agent protocol is ASCII, so UTF-8 gains nothing."""
        idle = int(idle_timeout_s) if idle_timeout_s else None
        msg = wsm.create(self._to, self._operation_s, codepage=SHELL_CODEPAGE, noprofile=True, idle_timeout_s=idle)
        answer = self._call("Create", self._exchange, "Create", msg)
        if not answer.shell_id:
            raise WSManFaultError("the WinRM service answered Create without a ShellId", host=self.endpoint.host)
        return answer.shell_id

    def run_command(self, shell_id: str, command: str, args: list[str]) -> str:
        """WS-Man Command: start `command args` directly (no cmd.exe). Returns the CommandId.

        Unlike pywinrm's `run_command` (which joins the arguments into one string), each argument
        travels in its own `rsp:Arguments` element, as [MS-WSMV] 2.2.4.7 CommandLine allows."""
        msg = wsm.command(self._to, self._operation_s, shell_id, command, args)
        answer = self._call("Command", self._exchange, "Command", msg)
        if not answer.command_id:
            raise WSManFaultError("the WinRM service answered Command without a CommandId", host=self.endpoint.host)
        return answer.command_id

    def send(self, shell_id: str, command_id: str, chunk: bytes, *, end: bool) -> None:
        """WS-Man Send ([MS-WSMV] 3.1.4.13): one stdin chunk; `end` closes stdin."""
        msg = wsm.send(self._to, self._operation_s, shell_id, command_id, chunk, end=end)
        self._call("Send", self._exchange, "Send", msg)

    def send_base64(self, shell_id: str, command_id: str, data: bytes, *, end: bool) -> None:
        """`send` of a stdin chunk given as its base64 text (`remoting.chunking.split_base64`)."""
        msg = wsm.send_base64(self._to, self._operation_s, shell_id, command_id, data, end=end)
        self._call("Send", self._exchange, "Send", msg)

    def receive(self, shell_id: str, command_id: str, wait_s: float) -> ReceiveResult | None:
        """WS-Man Receive, long-polling at most `wait_s` seconds (whole seconds, at least 1).
        Returns None when the poll expired with no output (the expected w:TimedOut)."""
        timeout = max(1, min(self._operation_s, math.ceil(wait_s)))
        msg = wsm.receive(self._to, timeout, shell_id, command_id)
        try:
            answer = self._exchange("Receive", msg)
            out, err = answer.stream_bytes("stdout"), answer.stream_bytes("stderr")
        except wexc.WinRMOperationTimeoutError:
            return None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise self._mapped(exc, "Receive") from exc
        done = answer.command_state is not None and answer.command_state.endswith("CommandState/Done")
        code = -1
        if done:
            try:
                code = int(answer.exit_code) if answer.exit_code else -1
            except ValueError:
                raise MalformedAnswerError("the host's Receive answer has a non-numeric ExitCode",
                                           host=self.endpoint.host) from None
        return ReceiveResult(out, err, code, done)

    def terminate(self, shell_id: str, command_id: str) -> None:
        """WS-Man Signal terminate for a running command."""
        msg = wsm.signal_terminate(self._to, self._operation_s, shell_id, command_id)
        self._call("Signal", self._exchange, "Signal", msg)

    def delete_shell(self, shell_id: str) -> None:
        """WS-Man Delete of the shell, keeping the HTTP connection (see `close`)."""
        msg = wsm.delete(self._to, self._operation_s, shell_id)
        self._call("Delete", self._exchange, "Delete", msg)

    def close(self) -> None:
        """Drop the HTTP session and its connections (end of the host's session)."""
        self._proto.transport.close_session()
