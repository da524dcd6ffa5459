"""How to reach one Windows host over WS-Management: the connection settings remoting needs.

`inventory` builds an `Endpoint` per host; `remoting.session` consumes it. `Secret` wraps any
credential so that it never prints: str/repr give `***`, and only `reveal()` hands the value to
the transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Scheme = Literal["https", "http"]
Transport = Literal["ntlm", "kerberos", "basic", "credssp", "certificate"]
CertValidation = Literal["validate", "ignore"]
MessageEncryption = Literal["auto", "always", "never"]

DEFAULT_PORTS: dict[str, int] = {"https": 5986, "http": 5985}  # WinRM 2.0+ listeners (MS docs: "Installation and configuration for Windows Remote Management")


class Secret:
    """A credential value that never shows itself.

    `str()`/`repr()`/format give `***`; equality compares values; `reveal()` returns the
    plain string and is called only where the value goes on the wire (pywinrm's transport).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the plain value. Call only when handing it to the authentication layer."""
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the value to disk: refuse
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True)
class Timeouts:
    """Per-host time limits, in seconds.

    connect: TCP connect; operation: WS-Man OperationTimeout sent with each request (the
    server long-polls Receive up to this); read: HTTP read, must exceed `operation`;
    command: a whole agent invocation (Command→Receive Done); a command past it is signalled
    (terminate) and reported, never polled forever.
    """

    connect: float = 10.0
    operation: float = 20.0
    read: float = 30.0
    command: float = 300.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect to one host's WinRM listener.

    host: the name used in reports; address: DNS name or IP to connect to; port defaults to
    5986 (https) or 5985 (http). `allow_unencrypted` must be True for Basic auth over plain
    HTTP or for message_encryption "never" on http; remoting refuses otherwise.
    `ca_trust_path` is a PEM file used to validate the server certificate. Kerberos (names as
    pywinrm's): `service` is the SPN service class (HTTP), `kerberos_hostname_override` the SPN's
    host part when it differs from `address`, `kerberos_delegation` forwards the TGT.
    """

    host: str
    address: str
    port: int | None = None
    scheme: Scheme = "https"
    path: str = "/wsman"
    transport: Transport = "ntlm"
    username: str | None = None
    password: Secret | None = None
    cert_validation: CertValidation = "validate"
    ca_trust_path: str | None = None
    message_encryption: MessageEncryption = "auto"
    allow_unencrypted: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    service: str = "HTTP"
    kerberos_hostname_override: str | None = None
    kerberos_delegation: bool = False

    @property
    def effective_port(self) -> int:
        """The TCP port: explicit, or the WinRM default for the scheme."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @property
    def url(self) -> str:
        """The WS-Management endpoint URL, e.g. `https://wsus01.corp.example:5986/wsman`."""
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{addr}:{self.effective_port}{self.path}"
