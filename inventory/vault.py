"""Ansible Vault's envelope and cipher: parse `$ANSIBLE_VAULT;1.x;AES256[;label]` text and decrypt it.

Pure functions, no I/O. Follows ansible-core `ansible/parsing/vault/__init__.py`
(`parse_vaulttext_envelope`, `_parse_vaulttext`, `VaultAES256._gen_key_initctr` and
`_decrypt_cryptography`), the format Ansible documents under "Vault payload format 1.1 - 1.2"
(https://docs.ansible.com/ansible/latest/vault_guide/vault_using_encrypted_content.html):

- line 1, the header: `$ANSIBLE_VAULT;<version>;<cipher>` and, in format 1.2, `;<vault id label>`;
- the other lines: hex text, wrapped at 80 characters, of
  `hex(salt) + "\\n" + hex(HMAC) + "\\n" + hex(ciphertext)`;
- key material: PBKDF2-HMAC-SHA256 over the vault password with the salt, 10000 iterations,
  80 bytes = AES key (32) + HMAC key (32) + counter block (16);
- HMAC-SHA256 (second key) over the ciphertext, checked before anything is decrypted;
- AES-256 in CTR mode, plaintext PKCS#7-padded to 128 bits.

Only `cryptography`'s primitives are used; the HMAC is compared in constant time by
`cryptography.hazmat.primitives.hmac.HMAC.verify`.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HEADER = "$ANSIBLE_VAULT"
VERSIONS = ("1.1", "1.2")
CIPHER = "AES256"
PBKDF2_ITERATIONS = 10000  # VaultAES256._create_key_cryptography
KEY_BYTES = 32
IV_BYTES = 16  # algorithms.AES.block_size // 8


class VaultFormatError(ValueError):
    """The text is not a well-formed vault envelope (header, hex body, three parts)."""


class VaultPasswordError(ValueError):
    """The HMAC does not match: the password is wrong (or the data was altered)."""


class VaultText(str):
    """A `!vault` YAML scalar before decryption: the envelope text, still encrypted.

    `line` is the 1-based line of the scalar in its file (None when unknown).
    """

    line: int | None = None


class UnsafeText(str):
    """An Ansible `!unsafe` value: text that is never templated (a password holding `{{`, say)."""


@dataclass(frozen=True)
class VaultEnvelope:
    """A parsed vault payload.

    version: "1.1" or "1.2"; cipher: "AES256"; vault_id: the label of a 1.2 envelope, else None;
    salt, hmac, ciphertext: the raw bytes (hmac is the 32-byte SHA-256 MAC).
    """

    version: str
    cipher: str
    vault_id: str | None
    salt: bytes
    hmac: bytes
    ciphertext: bytes


def is_encrypted(text: str | bytes) -> bool:
    """True when `text` starts with the vault header (ansible-core `is_encrypted`)."""
    head = text[: len(HEADER)]
    return (head.decode("ascii", "replace") if isinstance(head, bytes) else head) == HEADER


def _unhex(data: bytes, what: str) -> bytes:
    try:
        return binascii.unhexlify(data)
    except (binascii.Error, ValueError):
        raise VaultFormatError(f"the {what} is not hexadecimal") from None


def parse_envelope(text: str) -> VaultEnvelope:
    """Parse vault envelope text (whitespace around lines is ignored, as Ansible strips it).

    Raises VaultFormatError naming what is wrong: the header, an unsupported version or cipher,
    a body that is not hex, or a body without its salt/HMAC/ciphertext parts.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or not lines[0].startswith(HEADER + ";"):
        raise VaultFormatError(f"not a vault envelope (the first line must start with {HEADER};)")
    header = [part.strip() for part in lines[0].split(";")]
    if len(header) < 3:
        raise VaultFormatError("the vault header has no cipher")
    version, cipher = header[1], header[2]
    if version not in VERSIONS:
        raise VaultFormatError(f"vault format {version!r} is not supported (only 1.1 and 1.2)")
    if cipher != CIPHER:
        raise VaultFormatError(f"vault cipher {cipher!r} is not supported (only AES256)")
    vault_id = header[3] if len(header) >= 4 and header[3] else None
    if version == "1.2" and vault_id is None:
        raise VaultFormatError("a format 1.2 vault header must name its vault id")
    try:
        body = "".join(lines[1:]).encode("ascii")
    except UnicodeEncodeError:
        raise VaultFormatError("the vault body is not hexadecimal") from None
    parts = _unhex(body, "vault body").split(b"\n", 2)
    if len(parts) != 3:
        raise VaultFormatError("the vault body lacks its salt, HMAC and ciphertext parts")
    salt = _unhex(parts[0], "salt")
    mac = _unhex(parts[1], "HMAC")
    ciphertext = _unhex(parts[2], "ciphertext")
    if not salt or len(mac) != 32 or not ciphertext or len(ciphertext) % IV_BYTES:
        raise VaultFormatError("the vault body has a part of the wrong length")
    return VaultEnvelope(version, cipher, vault_id, salt, mac, ciphertext)


def derive_keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """(AES key, HMAC key, CTR initial counter block) from a vault password and salt."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=2 * KEY_BYTES + IV_BYTES, salt=salt,
                     iterations=PBKDF2_ITERATIONS)
    derived = kdf.derive(password)
    return derived[:KEY_BYTES], derived[KEY_BYTES : 2 * KEY_BYTES], derived[2 * KEY_BYTES :]


def decrypt(envelope: VaultEnvelope, password: bytes) -> bytes:
    """The plaintext bytes of `envelope` under `password` (the vault password's UTF-8 bytes).

    Raises VaultPasswordError when the HMAC does not verify (wrong password or altered data),
    VaultFormatError when the padding is broken after a matching HMAC.
    """
    aes_key, mac_key, counter = derive_keys(password, envelope.salt)
    mac = HMAC(mac_key, hashes.SHA256())
    mac.update(envelope.ciphertext)
    try:
        mac.verify(envelope.hmac)  # constant-time comparison
    except InvalidSignature:
        raise VaultPasswordError("HMAC verification failed") from None
    decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(counter)).decryptor()
    padded = decryptor.update(envelope.ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise VaultFormatError("the decrypted vault data has invalid padding") from None
