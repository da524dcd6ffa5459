"""The lab's throwaway PKI: a self-signed CA and one server certificate, generated at start.

Clients validate the lab's HTTPS endpoints against the CA file (`requests` `verify=<ca.pem>`,
pywinrm `ca_trust_path`) instead of switching validation off. Keys are ECDSA P-256 (fast to
generate, accepted by OpenSSL/urllib3); the server certificate names every loopback address and
host name the lab serves in its subjectAltName, and `localhost`.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class LabPki:
    """Paths of the generated PEM files: `ca_path` (give it to clients), `cert_path`, `key_path`."""

    ca_path: Path
    cert_path: Path
    key_path: Path
    #: The same names and key, issued by the same CA, but expired yesterday (fault certificate: expired).
    expired_cert_path: Path | None = None

    def server_context(self, *, expired: bool = False) -> ssl.SSLContext:
        """A TLS server context (TLS 1.2+) loaded with the server certificate (or its expired twin) and key."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        cert = self.expired_cert_path if expired and self.expired_cert_path is not None else self.cert_path
        ctx.load_cert_chain(cert, self.key_path)
        return ctx

    def end_point(self, *, expired: bool = False) -> bytes:
        """The RFC 5929 `tls-server-end-point` channel binding data of the server certificate (or
        its expired twin): `tls-server-end-point:` + its hash (see `end_point_hash`)."""
        path = self.expired_cert_path if expired and self.expired_cert_path is not None else self.cert_path
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return b"tls-server-end-point:" + end_point_hash(cert)


def end_point_hash(cert: x509.Certificate) -> bytes:
    """RFC 5929 section 4.1: the certificate's DER hashed with its signature's hash function, SHA-256
    when that is MD5 or SHA-1. Raises ValueError for a signature without one hash (Ed25519), for
    which the RFC leaves the binding undefined. (The lab's own copy, as a Windows host computes it
    on its side; kbfix's is `remoting.kerberos.certificate_hash`.)"""
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise ValueError("tls-server-end-point is undefined for this certificate's signature algorithm")
    name = "sha256" if algorithm.name in ("md5", "sha1") else algorithm.name
    return hashlib.new(name, cert.public_bytes(serialization.Encoding.DER)).digest()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kbfix winlab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(workdir: Path, addresses: Iterable[str], names: Iterable[str], days: int = 7) -> LabPki:
    """Generate the CA and server certificate into `workdir` (created if needed); valid `days` days.

    addresses: IP literals for the SAN (e.g. `127.0.0.1`); names: DNS names (host names; invalid
    DNS labels are skipped). Raises OSError when the files cannot be written.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(minutes=5)
    end = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kbfix winlab CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    seen: set[str] = {"localhost"}
    for addr in addresses:
        if addr not in seen:
            seen.add(addr)
            alt.append(x509.IPAddress(ipaddress.ip_address(addr)))
    for name in names:
        dns = name.lower()
        if dns not in seen and dns.replace("-", "").replace(".", "").isalnum():
            seen.add(dns)
            alt.append(x509.DNSName(dns))

    key = ec.generate_private_key(ec.SECP256R1())

    def server_cert(not_before: datetime.datetime, not_after: datetime.datetime) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(_name("winlab")).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    cert = server_cert(start, end)
    expired = server_cert(now - datetime.timedelta(days=366), now - datetime.timedelta(days=1))

    pki = LabPki(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key", workdir / "server-expired.pem")
    pki.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert pki.expired_cert_path is not None
    pki.expired_cert_path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    pki.key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pki.key_path.chmod(0o600)
    return pki
