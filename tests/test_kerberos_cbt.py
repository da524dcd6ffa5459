"""Kerberos over HTTPS with TLS channel binding (issue 16): the RFC 5929 `tls-server-end-point`
hash kbfix computes, and end to end against the lab, whose acceptor checks the bindings it
receives as WinRM's CbtHardeningLevel says (Relaxed by default, Strict refuses a token without
one). The end-to-end tests need the lab KDC (see tests/test_kerberos_lab.py) and skip without it.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from kbfix.cli import app
from remoting import kerberos
from winlab import auth as lab_auth
from winlab import fixtures as fixtures_mod
from winlab.kdc import LabKdc, missing_tools
from winlab.kerberos_lab import kdc_for, write_kerberos_inventory
from winlab.lab import Lab
from winlab.tls import end_point_hash

HOSTS = 2
_missing = missing_tools() + ([] if kerberos.kerberos_available() else ["kbfix[kerberos] (gssapi, krb5)"])
needs_kdc = pytest.mark.skipif(bool(_missing), reason=f"Kerberos lab needs {', '.join(_missing)}")


def _cert(key: Any, algorithm: hashes.HashAlgorithm | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wsus01.corp.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, algorithm))
    return cert.public_bytes(serialization.Encoding.DER)


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("digest_option", ["-sha1", "-md5"])
def test_md5_and_sha1_signatures_bind_with_sha256(tmp_path: Path, digest_option: str) -> None:
    """RFC 5929 4.1: a certificate signed with MD5 or SHA-1 (as old Windows CAs issued them) is hashed
    with SHA-256. cryptography no longer signs with them, so openssl makes the certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(pem), digest_option, "-subj", "/CN=wsus01", "-days", "1"],
                   check=True, capture_output=True, timeout=60)
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == digest_option[1:]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert kerberos.certificate_hash(der) == hashlib.sha256(der).digest()
    assert end_point_hash(cert) == hashlib.sha256(der).digest()


@pytest.mark.parametrize("key,signed_with,expected", [
    (_RSA, hashes.SHA256(), hashes.SHA256()),
    (_RSA, hashes.SHA384(), hashes.SHA384()),
    (_RSA, hashes.SHA512(), hashes.SHA512()),
    (ec.generate_private_key(ec.SECP384R1()), hashes.SHA384(), hashes.SHA384()),
])
def test_the_certificate_hash_follows_rfc_5929(key: Any, signed_with: hashes.HashAlgorithm,
                                               expected: hashes.HashAlgorithm) -> None:
    der = _cert(key, signed_with)
    digest = hashes.Hash(expected)
    digest.update(der)
    want = digest.finalize()
    assert kerberos.certificate_hash(der) == want
    assert end_point_hash(x509.load_der_x509_certificate(der)) == want  # the lab's own computation agrees
    bindings = kerberos.tls_channel_bindings(der)
    assert bindings is not None and bindings.application_data == b"tls-server-end-point:" + want


def test_a_signature_without_one_hash_has_no_binding() -> None:
    """Ed25519: RFC 5929 leaves tls-server-end-point undefined, so nothing is bound."""
    der = _cert(ed25519.Ed25519PrivateKey.generate(), None)
    assert kerberos.certificate_hash(der) is None
    assert kerberos.tls_channel_bindings(der) is None


def test_the_hash_of_the_lab_certificate(tmp_path: Path) -> None:
    """What kbfix computes from the lab's server certificate is what the lab's acceptor expects."""
    from winlab.tls import make_pki

    pki = make_pki(tmp_path, ["127.0.0.1"], ["wsus01"])
    der = x509.load_pem_x509_certificate(pki.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    bindings = kerberos.tls_channel_bindings(der)
    assert bindings is not None and bindings.application_data == pki.end_point()
    assert pki.end_point() != pki.end_point(expired=True)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def kdc() -> Iterator[LabKdc]:
    if _missing:
        pytest.skip(f"Kerberos lab needs {', '.join(_missing)}")
    with kdc_for(fixtures_mod.demo_site()[:HOSTS]) as realm:
        yield realm


@pytest.fixture()
def https_lab(kdc: LabKdc) -> Iterator[Lab]:
    with Lab(fixtures_mod.demo_site()[:HOSTS], https=True) as running:
        yield running


@pytest.fixture()
def bound(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """After each completed Kerberos handshake on the lab: whether the client's bindings matched."""
    seen: list[bool] = []
    original = lab_auth.ConnectionAuth.ntlm_step

    def recording(self: lab_auth.ConnectionAuth, scheme: str, token: str) -> lab_auth.NtlmStep:
        step = original(self, scheme, token)
        if step.user is not None:
            seen.append(self.channel_bound)
        return step

    monkeypatch.setattr(lab_auth.ConnectionAuth, "ntlm_step", recording)
    return seen


def _ping(lab: Lab, kdc: LabKdc, tmp_path: Path) -> Any:
    path = write_kerberos_inventory(lab, kdc, tmp_path / "krb.yaml")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])


@needs_kdc
@pytest.mark.parametrize("level", ["Relaxed", "Strict"])
def test_kerberos_over_https_is_channel_bound(tmp_path: Path, https_lab: Lab, kdc: LabKdc, bound: list[bool],
                                             level: str) -> None:
    for host in https_lab.hosts:
        host.cbt_hardening_level = level  # type: ignore[attr-defined]
    result = _ping(https_lab, kdc, tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("\tok\t") == HOSTS
    assert bound == [True] * HOSTS


@needs_kdc
def test_strict_refuses_a_token_without_binding(tmp_path: Path, https_lab: Lab, kdc: LabKdc, bound: list[bool],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that binds nothing (kbfix before issue 16) gets in under Relaxed, not under Strict."""
    monkeypatch.setattr(kerberos, "tls_channel_bindings", lambda der: None)
    result = _ping(https_lab, kdc, tmp_path / "relaxed")
    assert result.exit_code == 0, result.output
    assert bound == [False] * HOSTS
    for host in https_lab.hosts:
        host.cbt_hardening_level = "Strict"  # type: ignore[attr-defined]
    result = _ping(https_lab, kdc, tmp_path / "strict")
    assert result.exit_code == 4, result.output
    assert result.output.count("\tok\t") == 0


@needs_kdc
def test_a_token_bound_to_another_certificate_is_refused(tmp_path: Path, https_lab: Lab, kdc: LabKdc,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A man in the middle with its own certificate: the token binds the certificate the client saw,
    the host compares it with its own and refuses, even at the default Relaxed level."""
    other = _cert(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    monkeypatch.setattr(kerberos, "peer_certificate", lambda response: other)
    result = _ping(https_lab, kdc, tmp_path)
    assert result.exit_code == 4, result.output
    assert result.output.count("\tok\t") == 0
