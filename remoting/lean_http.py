"""A lean send path for pywinrm's `Transport`: the same settings, authentication and message
sealing as its requests session, without rebuilding a request per message (nor the requests
session), and NTLM authenticated on the first real request.

pywinrm prepares every message through `requests.Session.prepare_request` (merging settings,
cookies and auth for each one; about 0.3 ms of CPU) and, for NTLM over HTTP, sets up the sealing
context with an empty POST that costs three HTTP requests before the first real one
(`Transport.setup_encryption`: an anonymous POST answered 401, then requests_ntlm's Negotiate
and Authenticate legs). `LeanSender` instead

- keeps the header fields that never change (requests' and pywinrm's headers, Basic
  credentials) as bytes per host session (`LeanSession`) and posts each message through
  `remoting.direct_http` with only Content-Type, Content-Length and an NTLM leg's Authorization
  added (no PreparedRequest per message);
- authenticates NTLM in two requests that carry the first real message: the Negotiate token on
  an empty POST (answered 401 with the challenge), then the Authenticate token together with
  the message, sealed with the new context when sealing is on. [MS-WSMV] 2.2.9.1.1 defines the
  `multipart/encrypted` body; the Authorization header travels on a request until the service
  answers 200 OK (as [MS-WSMV] 2.2.9.1.3.1 states for CredSSP), so the body may ride with the last
  authentication leg, as the Windows WinRM client sends it. Over HTTPS the channel binding
  (RFC 5929 tls-server-end-point, as requests_ntlm computes it) goes into the Authenticate token.

Kerberos and CredSSP keep pywinrm's own path. Errors are pywinrm's: InvalidCredentialsError for
HTTP 401, WinRMTransportError (with the answer text, decrypted) for other HTTP errors, and the
requests exceptions for network failures; `remoting.wsman_client` maps them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import threading
from types import SimpleNamespace
from urllib.parse import urlsplit

import requests
import requests.auth
import requests.utils
import spnego
import winrm.transport
from requests_ntlm import HttpNtlmAuth
from requests_ntlm.requests_ntlm import ShimSessionSecurity, _get_certificate_hash
from spnego._ntlm_raw.crypto import ntowfv1
from spnego.channel_bindings import GssChannelBindings
from winrm.encryption import Encryption
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError

from remoting import direct_http

LEAN_TRANSPORTS = frozenset({"basic", "ntlm"})


class LeanSender:
    """`send_message(bytes) -> bytes` for one pywinrm `Transport` whose auth method is Basic or
    NTLM. `username`/`password` are used only for the NTLM handshake; install with `install()`."""

    def __init__(
        self,
        transport: winrm.transport.Transport,
        username: str | None,
        password: str | None,
        *,
        total_s: float,
    ) -> None:
        self.transport = transport
        self.ntlm = transport.auth_method == "ntlm"
        self._username = username
        self._password = password
        self._total_s = total_s
        self._adapter: direct_http.DirectAdapter | None = None
        self._fields = b""  # the session's unchanging header fields (`_static_fields`)
        self._content_type = b"Content-Type: " + str(transport.default_headers["Content-Type"]).encode("ascii") + b"\r\n"
        self._endpoint = transport.endpoint
        self._host = urlsplit(transport.endpoint).hostname or ""
        self._https = transport.endpoint.lower().startswith("https")
        self._seal = self.ntlm and (
            transport.message_encryption == "always" or (transport.message_encryption == "auto" and not self._https)
        )

    def install(self) -> None:
        """Replace the transport's `build_session` and `send_message` with this sender's."""
        self.transport.build_session = self.build_session  # type: ignore[method-assign,assignment]
        self.transport.send_message = self.send_message  # type: ignore[method-assign]

    def build_session(self) -> LeanSession:
        """The transport's session, with the settings pywinrm's `build_session` gives a requests
        session for proxy=None and an explicit CA path (no proxy, verify = CA path or True, or
        False when validation is off; Basic or requests_ntlm auth; requests' and pywinrm's default
        headers), except that nothing is read from the environment (pywinrm's own lookup of proxy
        variables cost ~1 ms per host) and NTLM is left to `send_message`. Messages go through
        remoting.direct_http's adapter (bounded to `total_s` seconds per request, one kept-alive
        connection), so the session is a `LeanSession`, not a requests.Session."""
        t = self.transport
        if t.session is not None:
            return t.session  # type: ignore[return-value]  # (a LeanSession, set below)
        verify: bool | str = t.server_cert_validation == "validate"
        if verify and t.ca_trust_path not in (None, "legacy_requests"):
            verify = str(t.ca_trust_path)
        auth: requests.auth.AuthBase
        if self.ntlm:
            auth = HttpNtlmAuth(username=self._username, password=self._password, send_cbt=t.send_cbt)
        else:
            auth = requests.auth.HTTPBasicAuth(username=self._username or "", password=self._password or "")
        session = LeanSession(verify, auth, direct_http.DirectAdapter(total_s=self._total_s))
        self._adapter = session.adapter
        self._fields = _static_fields(tuple(t.default_headers.items()), auth if not self.ntlm else None)
        t.encryption = None  # a new session has no NTLM context yet: send_message authenticates
        t.session = session  # type: ignore[assignment]
        return session

    # ------------------------------------------------------------------ sending

    def _post(self, body: bytes, authorization: str | None = None) -> requests.Response:
        """POST one message (sealed when the transport has an encryption context) through the
        session's direct adapter: the session's unchanging header fields as built once
        (`_static_fields`), then Content-Type, the NTLM leg's Authorization if any, and
        Content-Length. What `Session.send` would add is never used by a WinRM conversation:
        response hooks (the NTLM legs are sent explicitly), cookie extraction and redirects (a
        WinRM service never redirects, and credentials must not follow one)."""
        encryption = self.transport.encryption
        if encryption is not None:
            body = encryption._encrypt_message(body, self._host) + encryption.MIME_BOUNDARY + b"--\r\n"
            content_type = (b'Content-Type: multipart/encrypted;protocol="' + encryption.protocol_string
                            + b'";boundary="Encrypted Boundary"\r\n')
        else:
            content_type = self._content_type
        fields = self._fields + content_type
        if authorization is not None:
            fields += b"Authorization: " + authorization.encode("ascii") + b"\r\n"
        fields += b"Content-Length: %d\r\n" % len(body)
        assert self._adapter is not None  # set by build_session, which send_message calls first
        session = self.transport.session
        return self._adapter.post(self._endpoint, fields, body, timeout=self.transport.read_timeout_sec,
                                  verify=session.verify if session is not None else True)

    def _checked(self, response: requests.Response) -> bytes:
        """The answer text (decrypted), or pywinrm's exception for an HTTP error status."""
        if response.status_code == 401:
            raise InvalidCredentialsError("the specified credentials were rejected by the server")
        if response.status_code >= 400:
            text = self.transport._get_message_response_text(response) if response.content else b""
            raise WinRMTransportError("http", response.status_code, text.decode("utf-8", "replace"))
        return self.transport._get_message_response_text(response)

    def send_message(self, message: str | bytes) -> bytes:
        """Send one WS-Man envelope and return the answer body (decrypted when sealed)."""
        session = self.build_session()
        body = message.encode("utf-8") if isinstance(message, str) else message
        if self.ntlm and not session.ntlm_ready:
            return self._ntlm_first(session, body)
        return self._checked(self._post(body))

    # ------------------------------------------------------------------ NTLM

    def _ntlm_first(self, session: LeanSession, body: bytes) -> bytes:
        client = spnego.client(
            _ntlm_credential(self._username or "", self._password or ""), hostname=self._host, service="http",
            protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm,
        )
        negotiate = client.step() or b""
        self.transport.encryption = None
        response = self._post(b"", f"Negotiate {base64.b64encode(negotiate).decode('ascii')}")
        bindings = self._channel_bindings(response) if self._https else None
        if response.status_code != 401:
            self._checked(response)
            raise InvalidCredentialsError(f"the server answered HTTP {response.status_code} instead of an NTLM challenge")
        challenge = _challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise InvalidCredentialsError("the server sent no NTLM challenge")
        try:
            authenticate = client.step(challenge, channel_bindings=bindings) or b""
        except Exception as exc:  # pyspnego raises its own error kinds for a bad challenge
            raise InvalidCredentialsError(f"the server's NTLM challenge was refused: {type(exc).__name__}") from exc
        if self._seal:
            auth = session.auth
            if isinstance(auth, HttpNtlmAuth):  # pywinrm's Encryption reads the context from here
                auth.session_security = ShimSessionSecurity(client)
            self.transport.encryption = Encryption(session, "ntlm")  # type: ignore[arg-type]  # reads .auth
        answer = self._checked(self._post(body, f"Negotiate {base64.b64encode(authenticate).decode('ascii')}"))
        session.ntlm_ready = True
        return answer

    @staticmethod
    def _channel_bindings(response: requests.Response) -> GssChannelBindings | None:
        """tls-server-end-point channel bindings of the TLS connection `response` came on (RFC 5929)."""
        raw = response.raw
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is None:
            try:
                sock = raw._fp.fp.raw._sock
            except AttributeError:
                return None
        try:
            der = sock.getpeercert(True)
        except (AttributeError, ValueError):
            return None
        digest = _get_certificate_hash(der) if der else None
        return GssChannelBindings(application_data=b"tls-server-end-point:" + digest) if digest else None


_NT_HASHES: dict[bytes, str] = {}
_NT_LOCK = threading.Lock()


def _ntlm_credential(username: str, password: str) -> spnego.NTLMHash:
    """The NTLM credential for `username`/`password` as an NT hash (MD4 of the UTF-16LE password,
    [MS-NLMP] 3.3.2 NTOWFv2's input), computed once per password in this process. Given a
    password, pyspnego also derives the LM hash with a pure-Python DES (~2 ms of CPU per host)
    though NTLMv2 never uses it. The cache is keyed by a SHA-256 of the password, not the
    password; the hash it holds is as secret as the password the caller already holds."""
    key = hashlib.sha256(password.encode("utf-8")).digest()
    with _NT_LOCK:
        nt = _NT_HASHES.get(key)
        if nt is None:
            nt = _NT_HASHES[key] = ntowfv1(password).hex()
    return spnego.NTLMHash(username=username, nt_hash=nt)


def _static_fields(defaults: tuple[tuple[str, str], ...], basic: requests.auth.AuthBase | None) -> bytes:
    """The header fields every message carries, as `Name: value\\r\\n` bytes: requests' default
    headers updated with pywinrm's `defaults` (as a requests.Session with them has) with
    `Connection: Keep-Alive` (NTLM authenticates the connection) and, for Basic, the
    Authorization field the `basic` auth object writes; Content-Type and Content-Length are per
    message (`LeanSender._post`). (A PreparedRequest built for this cost ~0.13 ms per host.)"""
    fields = _common_fields(defaults)
    if basic is not None:
        carrier = SimpleNamespace(headers={})  # what HTTPBasicAuth.__call__ reads and writes of a request
        basic(carrier)  # type: ignore[arg-type]
        fields += direct_http.header_fields(carrier.headers)
    return fields


@functools.lru_cache(maxsize=8)
def _common_fields(defaults: tuple[tuple[str, str], ...]) -> bytes:
    # The fields without credentials, the same for every host (building them cost ~10 us each).
    headers = requests.utils.default_headers()  # what requests.Session starts from
    headers.update(defaults)
    headers["Connection"] = "Keep-Alive"
    return direct_http.header_fields(headers, skip=("content-type", "content-length", "host"))


class LeanSession:
    """What the lean path keeps per host where pywinrm keeps a requests.Session
    (`Transport.session`): the TLS `verify` setting, the `auth` object (requests_ntlm's
    HttpNtlmAuth carries the NTLM sealing context that pywinrm's `Encryption` reads as
    `session.auth.session_security`) and the `adapter` holding the one connection. A
    requests.Session built only to hold these cost ~25 us per host (two urllib3 pool managers,
    a cookie jar, hooks) and none of it was used. `close()` drops the connection."""

    def __init__(self, verify: bool | str, auth: requests.auth.AuthBase, adapter: direct_http.DirectAdapter) -> None:
        self.verify = verify
        self.auth = auth
        self.adapter = adapter
        self.ntlm_ready = False  # NTLM authenticated this session's connection (`LeanSender._ntlm_first`)

    def close(self) -> None:
        """Close the connection (pywinrm's `Transport.close_session` calls this)."""
        self.adapter.close()


def _challenge(header: str) -> bytes | None:
    """The token of a `Negotiate <b64>` or `NTLM <b64>` WWW-Authenticate value, or None."""
    for part in header.split(","):
        scheme, _, token = part.strip().partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token.strip():
            try:
                return base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
    return None
