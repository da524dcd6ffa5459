"""A lean send path for pywinrm's `Transport`: the same requests session, authentication and
message sealing, without rebuilding a request per message, and NTLM authenticated on the first
real request.

pywinrm prepares every message through `requests.Session.prepare_request` (merging settings,
cookies and auth for each one; about 0.3 ms of CPU) and, for NTLM over HTTP, sets up the sealing
context with an empty POST that costs three HTTP requests before the first real one
(`Transport.setup_encryption`: an anonymous POST answered 401, then requests_ntlm's Negotiate
and Authenticate legs). `LeanSender` instead

- prepares one request per requests session and copies it per message (same URL, headers and
  Basic credentials; only the body changes);
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
import hashlib
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import requests
import requests.auth
import spnego
import winrm.transport
from requests_ntlm import HttpNtlmAuth
from requests_ntlm.requests_ntlm import ShimSessionSecurity, _get_certificate_hash
from spnego._ntlm_raw.crypto import ntowfv1
from spnego.channel_bindings import GssChannelBindings
from winrm.encryption import Encryption
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError

LEAN_TRANSPORTS = frozenset({"basic", "ntlm"})
_READY = "_kbfix_ntlm_ready"  # attribute set on a requests session once NTLM authenticated it
_TEMPLATE = "_kbfix_template"


class LeanSender:
    """`send_message(bytes) -> bytes` for one pywinrm `Transport` whose auth method is Basic or
    NTLM. `username`/`password` are used only for the NTLM handshake; install with `install()`."""

    def __init__(
        self,
        transport: winrm.transport.Transport,
        username: str | None,
        password: str | None,
        on_session: Callable[[requests.Session], None] | None = None,
    ) -> None:
        self.transport = transport
        self.ntlm = transport.auth_method == "ntlm"
        self._username = username
        self._password = password
        self._on_session = on_session
        self._endpoint = transport.endpoint
        self._host = urlsplit(transport.endpoint).hostname or ""
        self._https = transport.endpoint.lower().startswith("https")
        self._seal = self.ntlm and (
            transport.message_encryption == "always" or (transport.message_encryption == "auto" and not self._https)
        )

    def install(self) -> None:
        """Replace the transport's `build_session` and `send_message` with this sender's."""
        self.transport.build_session = self.build_session  # type: ignore[method-assign]
        self.transport.send_message = self.send_message  # type: ignore[method-assign]

    def build_session(self) -> requests.Session:
        """The transport's requests session, built as pywinrm's `build_session` builds it for
        proxy=None and an explicit CA path (no proxy, verify = CA path or True, or False when
        validation is off; Basic or requests_ntlm auth; pywinrm's default headers), except that
        nothing is read from the environment (`trust_env` off: pywinrm's own lookup of proxy
        variables cost ~1 ms per host) and NTLM is left to `send_message`. `on_session` (the
        direct, bounded adapter: remoting.direct_http) is applied before the session's first request."""
        t = self.transport
        if t.session is not None:
            return t.session
        session = requests.Session()
        session.trust_env = False
        session.proxies = {}
        verify: bool | str = t.server_cert_validation == "validate"
        if verify and t.ca_trust_path not in (None, "legacy_requests"):
            verify = str(t.ca_trust_path)
        session.verify = verify
        if self.ntlm:
            session.auth = HttpNtlmAuth(username=self._username, password=self._password, send_cbt=t.send_cbt)
        else:
            session.auth = requests.auth.HTTPBasicAuth(username=self._username or "", password=self._password or "")
        session.headers.update(t.default_headers)
        if self._on_session is not None:
            self._on_session(session)
        t.encryption = None  # a new session has no NTLM context yet: send_message authenticates
        t.session = session
        return session

    # ------------------------------------------------------------------ sending

    def _template(self, session: requests.Session) -> requests.PreparedRequest:
        template = getattr(session, _TEMPLATE, None)
        if template is None:
            template = requests.PreparedRequest()
            # NTLM legs are sent explicitly; Basic's header is part of the template.
            template.prepare(method="POST", url=self._endpoint, headers=dict(session.headers), data=b"",
                             auth=None if self.ntlm else session.auth)
            template.headers["Connection"] = "Keep-Alive"  # NTLM authenticates the connection
            setattr(session, _TEMPLATE, template)
        return template

    def _request(self, session: requests.Session, body: bytes, authorization: str | None = None) -> requests.PreparedRequest:
        prepared = self._template(session).copy()
        encryption = self.transport.encryption
        if encryption is not None:
            body = encryption._encrypt_message(body, self._host) + encryption.MIME_BOUNDARY + b"--\r\n"
            prepared.headers["Content-Type"] = (
                f'multipart/encrypted;protocol="{encryption.protocol_string.decode()}";boundary="Encrypted Boundary"'
            )
        prepared.body = body
        prepared.headers["Content-Length"] = str(len(body))
        if authorization is not None:
            prepared.headers["Authorization"] = authorization
        return prepared

    def _post(self, session: requests.Session, prepared: requests.PreparedRequest, *, stream: bool = False) -> requests.Response:
        """POST through the session's transport adapter (remoting.direct_http: bounded, one kept-alive connection), as `Session.send`
        would, minus what a WinRM conversation never uses: response hooks (the NTLM legs are
        sent explicitly), cookie extraction (several URL parses per answer) and redirects (a
        WinRM service never redirects, and credentials must not follow one)."""
        adapter = session.get_adapter(self._endpoint)
        response = adapter.send(
            prepared, stream=stream, timeout=self.transport.read_timeout_sec, verify=session.verify,
            cert=session.cert, proxies=session.proxies,
        )
        if not stream:
            _ = response.content
        return response

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
        session = self.transport.build_session()
        body = message.encode("utf-8") if isinstance(message, str) else message
        if self.ntlm and not getattr(session, _READY, False):
            return self._ntlm_first(session, body)
        return self._checked(self._post(session, self._request(session, body)))

    # ------------------------------------------------------------------ NTLM

    def _ntlm_first(self, session: requests.Session, body: bytes) -> bytes:
        client = spnego.client(
            _ntlm_credential(self._username or "", self._password or ""), hostname=self._host, service="http",
            protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm,
        )
        negotiate = client.step() or b""
        self.transport.encryption = None
        first = self._request(session, b"", f"Negotiate {base64.b64encode(negotiate).decode('ascii')}")
        response = self._post(session, first, stream=True)
        bindings = self._channel_bindings(response) if self._https else None
        _ = response.content  # read the (empty) body so the connection is reused
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
            self.transport.encryption = Encryption(session, "ntlm")
        last = self._request(session, body, f"Negotiate {base64.b64encode(authenticate).decode('ascii')}")
        answer = self._checked(self._post(session, last))
        setattr(session, _READY, True)
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
