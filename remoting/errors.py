"""Typed remoting errors, in an operator's words, each carrying the host and any WS-Man code.

Tree (modelled on pywinrm's `exceptions.py`, but every error knows its host):

    RemotingError
    ├── UnreachableError        TCP refused/reset/unresolvable, connect timeout, HTTP 5xx before a command started
    ├── AuthRejectedError       HTTP 401 after authentication (bad credentials, account locked, wrong transport)
    ├── CertificateError        TLS certificate did not validate against the CA / system store
    ├── InsecureTransportError  configuration refused: Basic or unencrypted traffic over plain HTTP
    ├── ConfigurationError      endpoint settings that cannot work (timeouts, unsupported transport)
    ├── WSManFaultError         a SOAP fault from the service (code, subcode, WSManFault code, message)
    │   ├── QuotaError          MaxShellsPerUser / MaxConcurrentOperations etc. (w:QuotaLimit, 0x803381A5 family)
    │   └── OperationTimeoutError  w:TimedOut (0x80338029) outside the expected Receive long-poll
    ├── MalformedAnswerError    the service's answer was not well-formed WS-Man XML, or larger than the cap
    ├── CommandTimeoutError     the agent ran past its own deadline; it was signalled and stopped
    ├── AgentError              the agent failed or answered outside protocol v1 (bad markers, nonce, JSON)
    │   ├── ResponseTooLargeError  the response passed the byte cap
    │   └── ProtocolError       a framed answer whose values have the wrong JSON types (a hostile host)
    ├── CheckModeViolation      a mutating op was about to be sent from a check-mode session (nothing sent)
    └── OutcomeUnknownError     a request carrying a mutating op was sent and its answer was lost: re-read state
"""

from __future__ import annotations


class RemotingError(Exception):
    """Base of every remoting failure.

    host: the inventory name of the host; fault_code: the WSManFault code as Windows sends it
    (decimal, e.g. 2150858793) or None; hresult: the same as `0x`-hex text or None.
    `kind` is a short machine tag used in reports (`unreachable`, `auth`, ...).
    """

    kind = "error"
    # Whether the same request may safely be tried again (set by the mapping in `remoting.wsman_client`
    # for refused/reset connections and HTTP 5xx; never for anything after a mutating op was sent).
    transient = False

    def __init__(self, message: str, *, host: str | None = None, fault_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.fault_code = fault_code

    @property
    def hresult(self) -> str | None:
        """The fault code as `0x`-prefixed 8 hex digits, or None."""
        return None if self.fault_code is None else f"0x{self.fault_code & 0xFFFFFFFF:08X}"

    def __str__(self) -> str:
        where = f"{self.host}: " if self.host else ""
        code = f" [{self.hresult}]" if self.fault_code is not None else ""
        return f"{where}{self.message}{code}"


class UnreachableError(RemotingError):
    """The host could not be reached (refused, reset, DNS, connect timeout, HTTP 5xx before a command)."""

    kind = "unreachable"


class AuthRejectedError(RemotingError):
    """The host rejected the credentials (HTTP 401 after the authentication exchange)."""

    kind = "auth"


class KerberosError(AuthRejectedError):
    """Kerberos failed on this side or at the KDC before the host accepted us (see `remoting.kerberos`).

    reason: clock_skew, unknown_spn, no_realm_mapping, kdc_unreachable, wrong_password,
    no_credentials, unknown_user or other. Never retried: each try would count against lockout.
    """

    def __init__(self, message: str, *, host: str | None = None, fault_code: int | None = None,
                 reason: str = "other") -> None:
        super().__init__(message, host=host, fault_code=fault_code)
        self.reason = reason


class CertificateError(RemotingError):
    """The server certificate failed validation (hostname, chain or expiry)."""

    kind = "certificate"


class InsecureTransportError(RemotingError):
    """Refused by configuration: credentials or payload would cross plain HTTP unencrypted."""

    kind = "config"


class ConfigurationError(RemotingError):
    """The endpoint settings cannot work (e.g. read timeout not above the operation timeout,
    an authentication transport this installation does not support). Nothing was sent."""

    kind = "config"


class WSManFaultError(RemotingError):
    """A SOAP fault from the WS-Management service.

    code: SOAP Code value (e.g. `s:Receiver`); subcode: e.g. `w:TimedOut`; fault_code: the
    WSManFault Code (decimal). Source: MS-WSMV 2.2.4.43 and the fault tables of [MS-WSMV].
    """

    kind = "wsman_fault"

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        fault_code: int | None = None,
        code: str | None = None,
        subcode: str | None = None,
    ) -> None:
        super().__init__(message, host=host, fault_code=fault_code)
        self.code = code
        self.subcode = subcode


class QuotaError(WSManFaultError):
    """A WinRM quota was hit (w:QuotaLimit; e.g. 2150859173 / 0x803381A5 MaxShellsPerUser)."""

    kind = "quota"


class OperationTimeoutError(WSManFaultError):
    """w:TimedOut (2150858793 / 0x80338029) where it was not an expected Receive long-poll."""

    kind = "timeout"


class MalformedAnswerError(RemotingError):
    """The service answered with something that is not a well-formed, bounded WS-Man message
    (bad XML, a DTD or entity declaration, a body past the byte cap). Not retried."""

    kind = "protocol"


class CommandTimeoutError(RemotingError):
    """The agent command ran past its deadline (seconds); it was signalled to stop."""

    kind = "timeout"


class AgentError(RemotingError):
    """The remote agent failed, or its answer did not follow agent protocol v1."""

    kind = "agent"


class ResponseTooLargeError(AgentError):
    """The agent's output passed the response byte cap; the rest was not read."""

    kind = "agent"


class CheckModeViolation(RemotingError):
    """A mutating op was about to be sent from a check-mode (dry-run) session. Nothing was sent."""

    kind = "check_mode"


class OutcomeUnknownError(RemotingError):
    """A request carrying a mutating op was sent but its answer was lost.

    The op may or may not have run: it is never re-sent; the caller re-reads host state.
    `op_ids` lists the ids of the mutating ops in that request.
    """

    kind = "unknown"

    def __init__(self, message: str, *, host: str | None = None, op_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message, host=host)
        self.op_ids = op_ids


class ProtocolError(AgentError):
    """The host's answer was well framed but its content breaks protocol v1 (wrong JSON types
    for an op's documented fields): the host is failed with kind `protocol`, the run goes on."""

    kind = "protocol"
