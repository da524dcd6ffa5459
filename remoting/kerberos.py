"""Kerberos for WinRM: the HTTP authentication, message sealing and operator-worded failures.

pywinrm 0.5's own Kerberos path needs pykerberos and a ticket from `kinit`; kbfix authenticates
with pyspnego instead (the `kerberos` extra: `pip install 'kbfix[kerberos]'`, which brings
`gssapi` and `krb5` and needs the system's MIT Kerberos library, Debian `libkrb5-3`/`libgssapi-krb5-2`,
plus `libkrb5-dev` to build from source). With a password from the inventory, pyspnego gets the
TGT in memory (`krb5_get_init_creds_password` into a MEMORY ccache; no kinit, nothing on disk);
without one it uses the user's credential cache (KRB5CCNAME, after `kinit`).

The exchange is RFC 4559 section 4 as WinRM speaks it: the first request carries
`Authorization: Negotiate <AP-REQ>` (a Kerberos token; mutual authentication requested) and
the 200 answer carries the service's AP-REP in `WWW-Authenticate`, which completes the context.
Names follow pywinrm (`winrm/transport.py`): `service` (SPN service class, default HTTP),
`kerberos_hostname_override` (the host part of the SPN, default the endpoint address),
`kerberos_delegation` (forward the TGT: the ok-as-delegate second hop).

Message sealing over HTTP is MS-WSMV 2.2.9.1 "Encrypted Message Types" (Kerberos: "message
encryption is done by using the GSS-API security context") with the 2.2.9.1.1.2.2 layout
("For Kerberos, [the encryption header] MUST be the per-message token as specified in
[RFC4121]"): pywinrm's `winrm/encryption.py` builds the multipart body and calls
`wrap_winrm`/`unwrap_winrm` on the session's auth object, implemented here with pyspnego's
`ContextProxy.wrap_winrm`/`unwrap_winrm`.

Over HTTPS the token carries a TLS channel binding (RFC 5929 section 4 `tls-server-end-point`:
the hash of the server certificate the client saw, in the GSS channel bindings' application
data), so a man in the middle that terminates TLS with its own certificate cannot relay the
token: Windows compares the binding with its own certificate. WinRM's `CbtHardeningLevel`
(`winrm get winrm/config/service`, MS docs "Installation and configuration for Windows Remote
Management": "Relaxed" by default; "Strict" refuses a request without channel binding, "None"
ignores it; the levels are HTTP.sys's HTTP_AUTHENTICATION_HARDENING_LEVELS). The certificate must
come from the connection the token is sent on, and requests prepares the Authorization header
before it connects, so over HTTPS the first request goes without a token, the 401 answer's
socket gives the certificate and the request is sent again, bound, on that same connection: the
flow of requests-kerberos (pywinrm's vendored `_get_channel_bindings_application_data`) and
requests-ntlm (`_get_server_cert`). Over HTTP the token is sent at once (no channel to bind).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import re
import secrets
import threading
from typing import Any

import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from requests.auth import AuthBase
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import NoCredentialError

from remoting.endpoint import Endpoint
from remoting.errors import ConfigurationError, KerberosError

INSTALL_HINT = ("pip install 'kbfix[kerberos]' (it needs the MIT Kerberos library: on Debian/Ubuntu "
                "apt-get install libkrb5-dev krb5-user; on RHEL dnf install krb5-devel krb5-workstation)")
_NEGOTIATE = re.compile(r"(?:^|,)\s*(?:Negotiate|Kerberos)\s+([A-Za-z0-9+/=]+)", re.IGNORECASE)


# Credentials the KDC rejected in this process, so that the next host with the same user and
# password fails at once instead of asking the KDC again: a fleet run must not lock the account
# out (AD's lockout threshold counts each failed pre-authentication). Keyed by a keyed hash.
_REJECTED: set[bytes] = set()
_REJECTED_LOCK = threading.Lock()
_KEY = secrets.token_bytes(32)


def _credential_key(endpoint: Endpoint) -> bytes | None:
    if endpoint.password is None:
        return None
    data = (endpoint.username or "").lower().encode() + b"\0" + endpoint.password.reveal().encode()
    return hmac.new(_KEY, data, hashlib.sha256).digest()


def kerberos_available() -> bool:
    """True when pyspnego can do Kerberos here (the `gssapi` and `krb5` packages import)."""
    return all(importlib.util.find_spec(name) is not None for name in ("gssapi", "krb5"))


def check_kerberos(endpoint: Endpoint) -> None:
    """Refuse a Kerberos endpoint that cannot work, before anything is sent.

    Raises ConfigurationError: the extra is not installed (with the install hint), or the user
    name is `DOMAIN\\user` (Kerberos names a principal: `user@REALM`)."""
    if not kerberos_available():
        raise ConfigurationError(f"Kerberos support is not installed: {INSTALL_HINT}", host=endpoint.host)
    if endpoint.username and "\\" in endpoint.username:
        raise ConfigurationError(
            f"Kerberos needs the user as user@REALM (e.g. {endpoint.username.split(chr(92))[-1]}@CORP.EXAMPLE.COM), "
            f"not {endpoint.username!r}", host=endpoint.host,
        )


def spn_host(endpoint: Endpoint) -> str:
    """The host part of the service principal: the override, else the address connected to."""
    return endpoint.kerberos_hostname_override or endpoint.address


def explain(exc: BaseException, endpoint: Endpoint) -> KerberosError:
    """An operator-worded KerberosError for a pyspnego/gssapi/krb5 failure.

    `reason` is one of clock_skew, unknown_spn, no_realm_mapping, kdc_unreachable,
    wrong_password, no_credentials, unknown_user, other. The message never contains the password.
    """
    text = str(exc)
    spn = f"{endpoint.service}/{spn_host(endpoint)}"
    host = endpoint.host
    low = text.lower()
    if "clock skew" in low:
        return KerberosError(
            "Kerberos refused: the clocks differ too much (clock skew) between this machine and the KDC "
            "or the host; sync time (w32tm /resync, chrony) — Kerberos allows 5 minutes", host=host,
            reason="clock_skew")
    server_unknown = re.search(r"server (\S+) not found in kerberos database", low)
    if server_unknown and server_unknown.group(1).startswith("krbtgt/"):
        return KerberosError(
            f"Kerberos: no realm is mapped for host name {spn_host(endpoint)!r}; add its DNS domain to "
            "[domain_realm] in krb5.conf, or set kerberos_hostname_override to the host's FQDN",
            host=host, reason="no_realm_mapping")
    if server_unknown:
        return KerberosError(
            f"Kerberos: the KDC does not know the service principal {spn} (unknown SPN); connect by the "
            "host's FQDN, set kerberos_hostname_override, or register the SPN (setspn -S)",
            host=host, reason="unknown_spn")
    if "cannot find kdc" in low or "cannot contact any kdc" in low or "cannot resolve network address for kdc" in low:
        return KerberosError(
            "Kerberos: no KDC could be reached for the user's realm; check krb5.conf ([realms] kdc, "
            "dns_lookup_kdc) and that the domain controllers answer on port 88", host=host,
            reason="kdc_unreachable")
    if "preauthentication failed" in low or "password incorrect" in low or "decrypt integrity check failed" in low:
        return KerberosError(
            "Kerberos: the KDC rejected the password for the user (wrong password; repeated tries can lock "
            "the account)", host=host, reason="wrong_password")
    if "client" in low and "not found in kerberos database" in low:
        return KerberosError("Kerberos: the KDC does not know this user principal", host=host, reason="unknown_user")
    if isinstance(exc, NoCredentialError) or "no credentials cache" in low or "no kerberos credentials" in low \
            or "credentials cache file" in low or "in cache collection" in low or "ticket expired" in low:
        return KerberosError(
            "Kerberos: no password in the inventory and no valid ticket in the credential cache; run kinit "
            "or give the password", host=host, reason="no_credentials")
    return KerberosError(f"Kerberos failed: {type(exc).__name__}: {_first_line(text)}", host=host, reason="other")


def certificate_hash(certificate_der: bytes) -> bytes | None:
    """RFC 5929 section 4.1 `tls-server-end-point` hash of a DER certificate, or None when undefined.

    The hash is the certificate's signature hash, except MD5 and SHA-1, which become SHA-256; a
    signature with no single hash (Ed25519, Ed448) leaves the binding undefined (None). Raises
    ValueError for bytes that are not a DER certificate.
    """
    cert = x509.load_der_x509_certificate(certificate_der)
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if algorithm is None:
        return None
    if algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate_der)
    return digest.finalize()


def tls_channel_bindings(certificate_der: bytes) -> GssChannelBindings | None:
    """The GSS channel bindings for a server certificate (application data
    `tls-server-end-point:` + `certificate_hash`), or None when RFC 5929 leaves them undefined."""
    digest = certificate_hash(certificate_der)
    return None if digest is None else GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


def peer_certificate(response: requests.Response) -> bytes | None:
    """The DER certificate the server presented on the connection `response` came on (urllib3
    backend, body not yet read), or None when it was not TLS or the socket is out of reach."""
    raw = response.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:  # urllib3 released the connection: reach the socket through the body's file
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    der = getpeercert(binary_form=True)
    return bytes(der) if der else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


class KerberosAuth(AuthBase):
    """requests auth for one WinRM host over Kerberos, with pywinrm's sealing hooks.

    Created per HTTP session (one security context per TCP connection, as the service keeps it).
    Raises KerberosError from the request that needs a token when Kerberos fails on this side
    (KDC, clock, SPN, credentials).
    """

    winrm_encryption_available = True

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._ctx: Any = None

    def _context(self, bindings: GssChannelBindings | None = None) -> Any:
        import spnego

        ep = self.endpoint
        key = _credential_key(ep)
        with _REJECTED_LOCK:
            known_bad = key is not None and key in _REJECTED
        if known_bad:
            raise KerberosError(
                "Kerberos: the KDC already rejected this user's password in this run (wrong password); not "
                "trying again, to avoid locking the account out", host=ep.host, reason="wrong_password")
        req = spnego.ContextReq.default
        if ep.kerberos_delegation:
            req |= spnego.ContextReq.delegate
        try:
            return spnego.client(
                ep.username or None,
                # The credential leaves its wrapper only here, into libkrb5 (an in-memory TGT).
                ep.password.reveal() if ep.password is not None else None,
                hostname=spn_host(ep),
                service=ep.service,
                context_req=req,
                protocol="kerberos",
                channel_bindings=bindings,
            )
        except Exception as exc:
            raise self._explained(exc) from None

    def _explained(self, exc: BaseException) -> KerberosError:
        """`explain(exc)`, remembering a rejected password for the rest of the run."""
        error = explain(exc, self.endpoint)
        key = _credential_key(self.endpoint)
        if error.reason == "wrong_password" and key is not None:
            with _REJECTED_LOCK:
                _REJECTED.add(key)
        return error

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._ctx is None or not self._ctx.complete:
            if self.endpoint.scheme == "https":
                # The token waits for the 401: the certificate of that connection binds it.
                request.register_hook("response", self._on_challenge)
                return request
            self._authorize(request, None)
            request.register_hook("response", self._on_response)
        return request

    def _authorize(self, request: requests.PreparedRequest, bindings: GssChannelBindings | None) -> None:
        """A new context's first token into `request`'s Authorization header. Raises KerberosError."""
        self._ctx = self._context(bindings)
        try:
            token = self._ctx.step()
        except Exception as exc:  # gssapi/krb5 raise their own types: KDC, clock, SPN, password
            self._ctx = None
            raise self._explained(exc) from None
        request.headers["Authorization"] = "Negotiate " + base64.b64encode(token or b"").decode("ascii")

    def _on_challenge(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """HTTPS: answer the host's 401 with a token bound to the certificate of this connection
        (RFC 5929 `tls-server-end-point`) and send the request again on it. Raises KerberosError
        when the certificate cannot be read (no binding would reach a Strict host) or Kerberos fails."""
        if response.status_code != 401 or (self._ctx is not None and self._ctx.complete):
            return response
        der = peer_certificate(response)
        if der is None:
            raise KerberosError("Kerberos over HTTPS: the server certificate could not be read for channel binding",
                                host=self.endpoint.host, reason="other")
        # None for a certificate whose binding RFC 5929 leaves undefined (Ed25519): sent unbound.
        bindings = tls_channel_bindings(der)
        _ = response.content  # drain the 401 so the connection can carry the retry
        response.raw.release_conn()
        retry = response.request.copy()
        retry.hooks = requests.hooks.default_hooks()
        self._authorize(retry, bindings)
        if response.connection is None:  # requests always sets it; a custom adapter might not
            raise KerberosError("Kerberos over HTTPS: no connection to answer the challenge on",
                                host=self.endpoint.host, reason="other")
        answer: requests.Response = response.connection.send(retry, **kwargs)
        answer.history.append(response)
        answer.request = retry
        return self._on_response(answer)

    def _on_response(self, response: requests.Response, **_: Any) -> requests.Response:
        """Complete mutual authentication with the service's AP-REP (on the answer that accepted us)."""
        if response.status_code == 401 or self._ctx is None or self._ctx.complete:
            return response
        match = _NEGOTIATE.search(response.headers.get("WWW-Authenticate", ""))
        if match is None:
            raise KerberosError("Kerberos: the host did not prove its identity (no mutual authentication token)",
                                host=self.endpoint.host, reason="other")
        try:
            self._ctx.step(base64.b64decode(match.group(1)))
        except Exception as exc:
            raise KerberosError(f"Kerberos: the host's answer did not authenticate it ({type(exc).__name__})",
                                host=self.endpoint.host, reason="other") from None
        return response

    def wrap_winrm(self, host: str | bytes | None, message: bytes) -> tuple[bytes, bytes]:
        """(sealed data, RFC 4121 header) for pywinrm's `Encryption._build_kerberos_message`."""
        if self._ctx is None or not self._ctx.complete:
            raise KerberosError("Kerberos: no security context to seal with", host=self.endpoint.host, reason="other")
        wrapped = self._ctx.wrap_winrm(message)
        return wrapped.data, wrapped.header

    def unwrap_winrm(self, host: str | bytes | None, message: bytes, signature: bytes) -> bytes:
        """The plaintext of a sealed answer (`Encryption._decrypt_kerberos_message`)."""
        if self._ctx is None or not self._ctx.complete:
            raise KerberosError("Kerberos: no security context to unseal with", host=self.endpoint.host, reason="other")
        return bytes(self._ctx.unwrap_winrm(signature, message))


def build_session(transport: Any, endpoint: Endpoint) -> requests.Session:
    """A requests session for pywinrm's `Transport` with `KerberosAuth` (replaces its pykerberos path).

    Certificate checks as pywinrm: off for `cert_validation: ignore`, the CA file when
    `ca_trust_path` is set, else the default store; no proxy or netrc from the environment.
    Sets up message encryption (pywinrm's blank authenticating POST) for `always`, or `auto`
    over http. Returns the session, also stored as `transport.session`.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = False if endpoint.cert_validation == "ignore" else (endpoint.ca_trust_path or True)
    session.auth = KerberosAuth(endpoint)
    session.headers.update(transport.default_headers)
    transport.session = session
    if endpoint.message_encryption == "always" or (endpoint.message_encryption == "auto" and endpoint.scheme == "http"):
        transport.setup_encryption(session)
    return session
