"""Authentication for the lab server: Basic, NTLM and Kerberos (as HTTP Negotiate) and message sealing.

Owns: matching a presented user name to a host's `accounts`, the per-connection Negotiate
acceptor (pyspnego: NTLM, and Kerberos with the lab KDC's keytab named by KRB5_KTNAME, see
`winlab.kdc`), the 401 challenge headers, and the `multipart/encrypted` body format of MS-WSMV
2.2.9.1.1 (what pywinrm's `winrm/encryption.py` writes and reads). The encryption header's length
is carried in the body (MS-WSMV 2.2.9.1.1.2.2 "Encrypted Data": for NTLM its 16-byte Message
Signature, for Kerberos "the per-message token as specified in [RFC4121]"); sealing and unsealing
go through pyspnego's `wrap_winrm`/`unwrap_winrm` for both.

pyspnego's NTLM acceptor looks passwords up in the file named by the NTLM_USER_FILE environment
variable (Heimdal format `DOMAIN:USER:PASSWORD`, see `spnego/_ntlm.py::_get_credential`); there is
no other way to hand it credentials. `ntlm_user_file` publishes a lab's accounts in that file while
the lab runs (labs in one process share it). Because the file is per process, one account name maps
to one password; the server re-checks the host's own password after the handshake, so a conflicting
password on another host is refused rather than accepted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import spnego
from spnego.channel_bindings import GssChannelBindings

#: What Windows lists on a 401 from WinRM over HTTP with Basic enabled (Negotiate first; Kerberos
#: is negotiated inside it). Source: WinRM service responses, `winrm get winrm/config/service/auth`.
WWW_AUTHENTICATE = ("Negotiate", 'Basic realm="WSMAN"')
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'


class AuthError(Exception):
    """Authentication or message sealing failed; the server answers 401 (or 400 for a bad body)."""


# ------------------------------------------------------------------------------------- accounts


def split_user(name: str) -> tuple[str, str]:
    """`DOMAIN\\user` / `user@domain` / `user` → (domain, user); domain '' when absent."""
    if "\\" in name:
        domain, _, user = name.partition("\\")
        return domain, user
    if "@" in name:
        user, _, domain = name.rpartition("@")
        return domain, user
    return "", name


def _domain_equal(a: str, b: str) -> bool:
    a, b = a.upper(), b.upper()
    return a == b or a.split(".")[0] == b.split(".")[0]


def match_account(accounts: Mapping[str, str], presented: str) -> tuple[str, str] | None:
    """Find the host account a presented user name means: (account key, password) or None.

    User names compare case-insensitively; when both sides carry a domain, the domains must match
    (NetBIOS name or the first label of a DNS name, case-insensitive), as a domain account would.
    """
    p_domain, p_user = split_user(presented)
    for key, password in accounts.items():
        a_domain, a_user = split_user(key)
        if a_user.upper() != p_user.upper():
            continue
        if p_domain and a_domain and not _domain_equal(p_domain, a_domain):
            continue
        return key, password
    return None


def parse_basic(value: str) -> tuple[str, str] | None:
    """`Basic <base64(user:password)>` → (user, password); None when malformed."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


# ----------------------------------------------------------------------------- NTLM user file


def ntlm_user_lines(accounts: Iterable[tuple[str, str]]) -> list[str]:
    """Heimdal-format lines (`DOMAIN:USER:PASSWORD`) covering the forms a client may send:
    `DOMAIN\\user` (domain + user), bare `user`, and `user@domain` (sent as the user name)."""
    lines: list[str] = []
    for name, password in accounts:
        domain, user = split_user(name)
        if ":" in user or ":" in domain or "\n" in password or "\r" in password:
            continue  # cannot be written in this file format; such an account can still use Basic
        lines.append(f"{domain}:{user}:{password}")
        if domain:
            lines.append(f":{user}:{password}")
            lines.append(f":{user}@{domain}:{password}")
    return lines


class _NtlmUserFiles:
    """The labs running in this process and their NTLM credential lines.

    pyspnego reads one process-wide environment variable, so this is deliberately process-wide
    too: while any lab runs, NTLM_USER_FILE names a file holding the lines of every running lab
    (newest first), rewritten whenever a lab starts or stops, in any order; when the last lab
    stops, the variable's original value comes back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[Path, list[str]]] = {}
        self._outside: str | None = None
        self._next = 0

    def add(self, path: Path, lines: list[str]) -> int:
        with self._lock:
            if not self._active:
                self._outside = os.environ.get("NTLM_USER_FILE")
            self._next += 1
            self._active[self._next] = (path, lines)
            self._publish()
            return self._next

    def remove(self, token: int) -> None:
        with self._lock:
            self._active.pop(token, None)
            self._publish()

    def _publish(self) -> None:
        if not self._active:
            if self._outside is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._outside
            return
        newest = max(self._active)
        path = self._active[newest][0]
        lines = [line for token in sorted(self._active, reverse=True) for line in self._active[token][1]]
        if self._outside and os.path.isfile(self._outside):
            lines.extend(Path(self._outside).read_text(encoding="utf-8").splitlines())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
        os.environ["NTLM_USER_FILE"] = str(path)


_USER_FILES = _NtlmUserFiles()


@contextlib.contextmanager
def ntlm_user_file(path: Path, accounts: Iterable[tuple[str, str]]) -> Iterator[Path]:
    """Publish `accounts` to pyspnego's NTLM acceptor for the duration (see `_NtlmUserFiles`):
    NTLM_USER_FILE names `path` (or a newer running lab's file, which then includes these lines)."""
    token = _USER_FILES.add(path, ntlm_user_lines(accounts))
    try:
        yield path
    finally:
        _USER_FILES.remove(token)


# ----------------------------------------------------------------------- per-connection state

#: WinRM's `CbtHardeningLevel` (`winrm get winrm/config/service`; default Relaxed, MS docs
#: "Installation and configuration for Windows Remote Management"): None ignores channel binding,
#: Relaxed checks it when the client sends one, Strict refuses a client that sends none.
CbtLevel = Literal["None", "Relaxed", "Strict"]
#: The DER prefix of an RFC 2743 InitialContextToken for the Kerberos mechanism
#: (APPLICATION 0, then OID 1.2.840.113554.1.2.2), as pyspnego's Kerberos client sends it.
_KRB5_OID = bytes.fromhex("06092a864886f712010202")


def _is_kerberos_token(token: bytes) -> bool:
    """True for a raw Kerberos GSS token (not NTLM, not SPNEGO)."""
    return token[:1] == b"\x60" and _KRB5_OID in token[:16]


def _channel_bound(ctx: spnego.ContextProxy) -> bool:
    """GSS_C_CHANNEL_BOUND_FLAG (MIT krb5 1.19+): the initiator's bindings matched the acceptor's."""
    inner = getattr(ctx, "_context", ctx)  # NegotiateProxy wraps the Kerberos (GSSAPIProxy) context
    flags = getattr(getattr(inner, "_context", None), "actual_flags", None)
    return flags is not None and bool(int(flags) & 0x800)



@dataclass
class NtlmStep:
    """The result of one Negotiate/NTLM leg: `token` to send back (None when none; SPNEGO may send a
    last token with the 200 that completes the handshake), `user` once done."""

    token: bytes | None
    user: str | None


class ConnectionAuth:
    """Authentication state of one TCP connection (NTLM authenticates the connection, not a request).

    `user` is the authenticated user name (`DOMAIN\\user`) once NTLM completed; `sealing` says that
    bodies on this connection are sealed with the NTLM context.
    """

    def __init__(self, end_point: bytes | None = None, cbt_level: CbtLevel = "Relaxed") -> None:
        self._ctx: spnego.ContextProxy | None = None
        self.scheme: str = ""
        self.user: str | None = None
        #: The connection's TLS channel binding data (`tls-server-end-point:<hash>`), None over HTTP.
        self.end_point = end_point
        self.cbt_level: CbtLevel = cbt_level
        #: True once a Kerberos context completed with the client's bindings matching `end_point`.
        self.channel_bound = False

    def reset(self) -> None:
        """Forget the connection's security context (a new handshake starts over)."""
        self._ctx = None
        self.user = None
        self.scheme = ""
        self.channel_bound = False

    def ntlm_step(self, scheme: str, token_b64: str) -> NtlmStep:
        """Feed one `Negotiate`/`NTLM` token. Raises AuthError for a bad token or wrong password."""
        try:
            token = base64.b64decode(token_b64.strip(), validate=True)
        except binascii.Error as exc:
            raise AuthError("token is not base64") from exc
        self.scheme = scheme
        try:
            if self._ctx is None or self._ctx.complete:
                # "negotiate" accepts both raw NTLM tokens (what requests_ntlm/pywinrm send under the
                # Negotiate scheme) and SPNEGO-wrapped NTLM (pypsrp, Windows clients).
                self._ctx = spnego.server(protocol="negotiate", service="http", channel_bindings=self._bindings(token))
                self.user = None
            out = self._ctx.step(token)
        except Exception as exc:  # hostile tokens make pyspnego raise many kinds (struct, index, value…)
            self.reset()
            raise AuthError(f"NTLM: {type(exc).__name__}") from exc
        if self._ctx.complete and self.negotiated_kerberos:
            self.channel_bound = _channel_bound(self._ctx)
            if self.cbt_level == "Strict" and self.end_point is not None and not self.channel_bound:
                # HTTP.sys Strict hardening: "Only clients that supported CBT are serviced."
                self.reset()
                raise AuthError("Kerberos: no channel binding (CbtHardeningLevel Strict)")
        if self._ctx.complete:
            self.user = self._ctx.client_principal or ""
            return NtlmStep(out, self.user)
        return NtlmStep(out, None)

    def _bindings(self, token: bytes) -> GssChannelBindings | None:
        """What the acceptor checks the client's bindings against: the connection's end point for
        a Kerberos token over TLS unless the level is None. An NTLM token gets none (the lab's NTLM
        acceptor does not emulate CBT hardening: pyspnego's would refuse an NTLM client without
        bindings at any level, which is Strict, not WinRM's default Relaxed)."""
        if self.end_point is None or self.cbt_level == "None" or not _is_kerberos_token(token):
            return None
        return GssChannelBindings(application_data=self.end_point)

    @property
    def negotiated_kerberos(self) -> bool:
        return self._ctx is not None and self._ctx.complete and self._ctx.negotiated_protocol == "kerberos"

    @property
    def kerberos(self) -> bool:
        """True when the completed context is Kerberos (the KDC checked the password), not NTLM."""
        return self._ctx is not None and self._ctx.complete and self._ctx.negotiated_protocol == "kerberos"

    @property
    def sealing(self) -> bool:
        """True once an NTLM context exists that can seal messages."""
        return self._ctx is not None and self._ctx.complete

    def unwrap(self, body: bytes) -> bytes:
        """Decrypt a `multipart/encrypted` request body (MS-WSMV 2.2.9.1.1). Raises AuthError."""
        if self._ctx is None or not self._ctx.complete:
            raise AuthError("no security context for an encrypted body")
        header, sep, rest = body.partition(b"\tContent-Type: application/octet-stream\r\n")
        if not sep or BOUNDARY not in header:
            raise AuthError("not a multipart/encrypted body")
        try:
            length = int(header.split(b"Length=")[1].split(b"\r\n")[0])
        except (IndexError, ValueError) as exc:
            raise AuthError("no OriginalContent Length") from exc
        end = BOUNDARY + b"--\r\n"
        if rest.endswith(end):
            rest = rest[: -len(end)]
        if len(rest) < 4:
            raise AuthError("truncated sealed message")
        sig_len = struct.unpack("<i", rest[:4])[0]
        if not 16 <= sig_len <= 1024 or len(rest) < 4 + sig_len:
            raise AuthError("bad signature length")
        try:
            plain = bytes(self._ctx.unwrap_winrm(rest[4 : 4 + sig_len], rest[4 + sig_len :]))
        except Exception as exc:  # pyspnego raises its own errors for a bad seal/sequence
            raise AuthError(f"unseal failed: {type(exc).__name__}") from exc
        if len(plain) != length:
            raise AuthError("sealed length does not match OriginalContent")
        return plain

    def wrap(self, body: bytes) -> bytes:
        """Seal a response body into the `multipart/encrypted` format pywinrm parses."""
        if self._ctx is None:
            raise AuthError("no security context")
        wrapped = self._ctx.wrap_winrm(body)
        signature, data = wrapped.header, wrapped.data
        return (
            BOUNDARY + b"\r\n\tContent-Type: " + ENCRYPTED_PROTOCOL.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(body)).encode()
            + b"\r\n" + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(signature)) + signature + data + BOUNDARY + b"--\r\n"
        )
