"""Doctor steps below the agent: name resolution and TCP connect, TLS, the authentication schemes
the server offers, and the WinRM configuration Get. Read-only: the only WS-Man message sent is a
WS-Transfer Get of `http://schemas.microsoft.com/wbem/wsman/1/config` ([MS-WSMV] 4.2.1).
"""

from __future__ import annotations

import datetime
import math
import socket
import ssl
import time
from typing import Any

import requests
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from defusedxml import ElementTree as defused_et  # type: ignore[import-untyped]

from kbfix.doctor.fixes import fix
from kbfix.doctor.model import Step, StepStatus
from remoting.endpoint import Endpoint

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
CONFIG_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"
GET_ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
#: OpenSSL verify result codes (x509_vfy.h) the TLS step tells apart.
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64
EXPIRY_WARNING_DAYS = 30
#: Which WWW-Authenticate schemes serve each kbfix transport (MS-WSMV 2.1: Negotiate carries NTLM
#: or Kerberos; Basic; CredSSP).
TRANSPORT_SCHEMES = {"ntlm": ("negotiate", "ntlm"), "kerberos": ("negotiate", "kerberos"), "basic": ("basic",),
                     "credssp": ("credssp",), "plaintext": ("basic",), "ssl": ("basic",)}
ENABLE_HINT = {"basic": 'winrm set winrm/config/service/auth @{Basic="true"}',
               "credssp": "Enable-WSManCredSSP -Role Server -Force",
               "kerberos": 'winrm set winrm/config/service/auth @{Kerberos="true"}'}


def _values(ep: Endpoint, **extra: Any) -> dict[str, Any]:
    return {"host": ep.host, "address": ep.address, "port": ep.effective_port, "scheme": ep.scheme, **extra}


def connect_step(ep: Endpoint) -> Step:
    """Resolve `ep.address` and open (and close) one TCP connection to the WinRM port."""
    t0 = time.monotonic()
    port = ep.effective_port
    try:
        infos = socket.getaddrinfo(ep.address, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Step("connect", StepStatus.FAIL, f"{ep.address} does not resolve: {exc.strerror}",
                    fix("resolve", **_values(ep)), time.monotonic() - t0)
    ip = infos[0][4][0]
    try:
        with socket.create_connection((ep.address, port), timeout=ep.timeouts.connect):
            pass
    except ConnectionRefusedError:
        return Step("connect", StepStatus.FAIL, f"{ep.address} ({ip}) refused TCP {port}",
                    fix("refused", **_values(ep)), time.monotonic() - t0, {"ip": ip})
    except TimeoutError:
        return Step("connect", StepStatus.FAIL, f"no answer from {ip}:{port} within {ep.timeouts.connect:g} s",
                    fix("connect_timeout", **_values(ep, seconds=ep.timeouts.connect)), time.monotonic() - t0, {"ip": ip})
    except OSError as exc:
        return Step("connect", StepStatus.FAIL, f"cannot connect to {ip}:{port}: {exc.strerror or exc}",
                    fix("refused", **_values(ep)), time.monotonic() - t0, {"ip": ip})
    took = time.monotonic() - t0
    return Step("connect", StepStatus.OK, f"{ep.address} -> {ip}:{port}, connected in {took * 1000:.0f} ms", None, took,
                {"ip": ip})


def _peer_certificate(ep: Endpoint) -> x509.Certificate | None:
    """The server certificate, fetched without validating it (to explain a validation failure)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((ep.address, ep.effective_port), timeout=ep.timeouts.connect) as raw, \
                ctx.wrap_socket(raw, server_hostname=ep.address) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def _cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject if a.oid == x509.NameOID.COMMON_NAME]  # type: ignore[misc]
    return [str(n.value) for n in san]  # type: ignore[attr-defined]


def tls_step(ep: Endpoint) -> Step:
    """Handshake with validation as kbfix will do it: the CA file in use (`ca_trust_path`, else the
    system store), the host name, the expiry. On failure, the certificate is fetched again
    without validation to say which of the three failed."""
    t0 = time.monotonic()
    ca_file = ep.ca_trust_path or "the system CA store"
    if ep.scheme != "https":
        return Step("tls", StepStatus.SKIP, "plain HTTP: no TLS (messages are sealed by NTLM/Kerberos)", None, 0.0)
    validate = ep.cert_validation != "ignore"
    ctx = ssl.create_default_context(cafile=ep.ca_trust_path) if validate else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not validate:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((ep.address, ep.effective_port), timeout=ep.timeouts.connect) as raw, \
                ctx.wrap_socket(raw, server_hostname=ep.address) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        took = time.monotonic() - t0
        cert = _peer_certificate(ep)
        code = getattr(exc, "verify_code", None)
        if cert is not None and code == X509_V_ERR_CERT_HAS_EXPIRED:
            end = cert.not_valid_after_utc
            return Step("tls", StepStatus.FAIL, f"the server certificate expired on {end:%Y-%m-%d %H:%M} UTC",
                        fix("tls_expired", **_values(ep, not_after=f"{end:%Y-%m-%d}")), took,
                        {"not_after": end.isoformat(), "ca_file": ca_file})
        if cert is not None and code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
            names = ", ".join(_cert_names(cert)) or "no names"
            return Step("tls", StepStatus.FAIL, f"the certificate does not name {ep.address} (it names {names})",
                        fix("tls_name", **_values(ep, names=names)), took, {"names": _cert_names(cert)})
        reason = getattr(exc, "verify_message", None) or str(exc)
        return Step("tls", StepStatus.FAIL, f"the certificate is not trusted by {ca_file}: {reason}",
                    fix("tls_chain", **_values(ep, ca_file=ca_file, reason=reason)), took, {"ca_file": ca_file})
    except TimeoutError as exc:
        reason = f"no TLS handshake within {ep.timeouts.connect:g} s"
        return Step("tls", StepStatus.FAIL, f"TLS handshake failed: {reason}",
                    fix("no_answer", **_values(ep, reason=reason)), time.monotonic() - t0, {"error": str(exc)})
    except (ssl.SSLError, OSError) as exc:
        reason = str(getattr(exc, "reason", None) or exc)
        return Step("tls", StepStatus.FAIL, f"TLS handshake failed: {reason}",
                    fix("tls_handshake", **_values(ep, reason=reason)), time.monotonic() - t0)
    took = time.monotonic() - t0
    cert = x509.load_der_x509_certificate(der) if der else None
    if cert is None:
        return Step("tls", StepStatus.WARN, "no server certificate seen", None, took)
    end = cert.not_valid_after_utc
    days = (end - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400
    detail = (f"{version}, certificate for {', '.join(_cert_names(cert))} valid until {end:%Y-%m-%d} "
              f"({math.floor(days)} days), CA file {ca_file}")
    data = {"not_after": end.isoformat(), "ca_file": ca_file, "names": _cert_names(cert), "tls_version": version}
    if not validate:
        return Step("tls", StepStatus.WARN, detail + "; validation is OFF for this host",
                    fix("tls_chain", **_values(ep, ca_file=ca_file, reason="cert_validation: ignore")), took, data)
    if days < EXPIRY_WARNING_DAYS:
        return Step("tls", StepStatus.WARN, detail + f"; expires within {EXPIRY_WARNING_DAYS} days",
                    fix("tls_expiring", **_values(ep, not_after=f"{end:%Y-%m-%d}")), took, data)
    return Step("tls", StepStatus.OK, detail, None, took, data)


def _verify(ep: Endpoint) -> bool | str:
    if ep.scheme != "https" or ep.cert_validation == "ignore":
        return False if ep.scheme == "https" else True
    return ep.ca_trust_path or True


def auth_offered_step(ep: Endpoint) -> Step:
    """POST an empty, unauthenticated request: the server's 401 lists the schemes it offers in
    `WWW-Authenticate`; compare them with the configured transport."""
    t0 = time.monotonic()
    try:
        with requests.Session() as s:
            s.trust_env = False  # WinRM goes direct, as remoting does
            resp = s.post(ep.url, data=b"", headers={"Content-Type": SOAP_CONTENT_TYPE}, verify=_verify(ep),
                          timeout=(ep.timeouts.connect, ep.timeouts.read))
            offered = list(resp.raw.headers.getlist("WWW-Authenticate")) if resp.raw is not None else []
            status = resp.status_code
    except requests.Timeout:
        reason = f"no HTTP answer within {ep.timeouts.read:g} s"
        return Step("auth_offered", StepStatus.FAIL, reason, fix("no_answer", **_values(ep, reason=reason)),
                    time.monotonic() - t0, {"no_answer": True})
    except requests.RequestException as exc:
        return Step("auth_offered", StepStatus.FAIL, f"no HTTP answer: {exc}", fix("no_answer", **_values(
            ep, reason=str(exc)[:200])), time.monotonic() - t0, {"no_answer": True})
    took = time.monotonic() - t0
    schemes = [o.split(" ", 1)[0].strip() for v in offered for o in v.split(",") if o.strip() and "=" not in o.split(" ", 1)[0]]
    wanted = TRANSPORT_SCHEMES.get(ep.transport, (ep.transport,))
    data = {"http_status": status, "offered": schemes, "transport": ep.transport}
    if status != 401:
        return Step("auth_offered", StepStatus.WARN, f"HTTP {status} to an unauthenticated request (expected 401)",
                    None, took, data)
    if not any(s.lower() in wanted for s in schemes):
        enable = ENABLE_HINT.get(ep.transport, 'winrm set winrm/config/service/auth @{Negotiate="true"}')
        return Step("auth_offered", StepStatus.FAIL, f"offers {', '.join(schemes) or 'nothing'}; configured {ep.transport}",
                    fix("auth_mismatch", **_values(ep, offered=", ".join(schemes) or "no scheme",
                                                   transport=ep.transport, enable=enable)), took, data)
    return Step("auth_offered", StepStatus.OK, f"offers {', '.join(schemes)}; configured {ep.transport}", None, took, data)


def winrm_config(ep: Endpoint) -> dict[str, int]:
    """WS-Transfer Get of the WinRM config resource over pywinrm (authenticated like the session).
    Returns the integer settings found (`MaxEnvelopeSizekb`, `MaxShellsPerUser`, `MaxMemoryPerShellMB`,
    `IdleTimeout`, ...). Raises winrm.exceptions.WSManFaultError (e.g. access denied) or a transport error."""
    import xmltodict  # type: ignore[import-untyped]
    from winrm.protocol import Protocol

    t = ep.timeouts
    proto = Protocol(ep.url, transport=ep.transport, username=ep.username,
                     password=ep.password.reveal() if ep.password is not None else None,
                     ca_trust_path=ep.ca_trust_path,  # type: ignore[arg-type]  # None: system store, never env vars
                     server_cert_validation=ep.cert_validation,
                     read_timeout_sec=math.ceil(t.read), operation_timeout_sec=math.ceil(t.operation),
                     message_encryption=ep.message_encryption, proxy=None)
    try:
        req = {"env:Envelope": proto.build_wsman_header(action=GET_ACTION, resource_uri=CONFIG_URI)}
        req["env:Envelope"].setdefault("env:Body", {})
        answer = proto.send_message(xmltodict.unparse(req))
    finally:
        proto.transport.close_session()
    # The answer is untrusted XML: defusedxml refuses DTDs and entity expansion.
    root = defused_et.fromstring(answer)
    out: dict[str, int] = {}
    for el in root.iter():
        text = (el.text or "").strip()
        if text.isdigit() and len(text) <= 12:
            out.setdefault(el.tag.rsplit("}", 1)[-1], int(text))
    return out
