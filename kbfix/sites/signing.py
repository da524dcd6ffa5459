"""Message signing material for the broker: Celery's `auth` serializer with X.509 certificates.

Celery signs a message with the sender's private key and the receiver verifies it against the
certificates in its store (`security_cert_store`, a glob of PEM files); a message that is not
`auth`-serialized, or signed by a certificate not in the store, is refused before any task code
runs. Source: Celery docs, "Security" → "Message Signing"
(https://docs.celeryq.dev/en/stable/userguide/security.html#message-signing) and
`celery/security/__init__.py::setup_security`, which insists on `accept_content == ['auth']`:
the auth serializer cannot be limited to some tasks, so kbfix signs every message (tasks,
results, remote-control replies), not only the mutating ones.

Where the files come from: `--sign-key/--sign-cert/--sign-store` on `kbfix worker`, else the
environment (`KBFIX_SIGN_KEY`, `KBFIX_SIGN_CERT`, `KBFIX_SIGN_STORE`) on both sides.
`generate_identity` makes a self-signed pair with `cryptography` (tests, first setups).
"""

from __future__ import annotations

import datetime as dt
import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kbfix.config import ConfigError

ENV_KEY, ENV_CERT, ENV_STORE = "KBFIX_SIGN_KEY", "KBFIX_SIGN_CERT", "KBFIX_SIGN_STORE"


class SigningError(ConfigError):
    """Signing material is missing or unreadable (the message names the setting and the file)."""


@dataclass(frozen=True)
class Signing:
    """One party's signing material: `key` (PEM private key, unencrypted), `cert` (its PEM
    certificate) and `store` (a glob of the PEM certificates this party trusts, e.g. `certs/*.pem`)."""

    key: Path
    cert: Path
    store: str

    def check(self) -> Signing:
        """Return self when the files exist and the store matches at least one file; else SigningError."""
        for name, path in (("key", self.key), ("certificate", self.cert)):
            if not Path(path).is_file():
                raise SigningError(f"signing {name} {path}: no such file")
        if not glob.glob(self.store):
            raise SigningError(f"signing certificate store {self.store!r}: matches no file")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Signing:
        """From KBFIX_SIGN_KEY / KBFIX_SIGN_CERT / KBFIX_SIGN_STORE; SigningError naming what is unset."""
        env = os.environ if env is None else env
        missing = [n for n in (ENV_KEY, ENV_CERT, ENV_STORE) if not env.get(n)]
        if missing:
            raise SigningError(
                f"a broker run needs message signing: set {', '.join(missing)} "
                "(PEM key, PEM certificate, glob of trusted certificates)"
            )
        return cls(Path(env[ENV_KEY]), Path(env[ENV_CERT]), env[ENV_STORE]).check()


def generate_identity(folder: Path, name: str, *, days: int = 30) -> Signing:
    """Write `<name>.key` (RSA 2048, PEM) and a self-signed `<name>.pem` (CN=name, `days` valid)
    in `folder`; the returned Signing's store is `<folder>/*.pem` (every identity made there)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Signing(key_path, cert_path, str(folder / "*.pem"))
