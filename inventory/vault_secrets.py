"""Vault passwords (where they come from) and decrypting the vault content of loaded inventory files.

Password sources follow ansible-core `ansible/cli/__init__.py::CLI.build_vault_ids` /
`setup_vault_secrets` and `ansible/parsing/vault/__init__.py::get_file_vault_secret`:

- `--vault-id label@source` (and ansible.cfg `vault_identity_list`, env
  `ANSIBLE_VAULT_IDENTITY_LIST`): `source` is `prompt`, a file or an executable; without `@` the
  label is `default`;
- `--vault-password-file PATH` (and ansible.cfg `vault_password_file`, env
  `ANSIBLE_VAULT_PASSWORD_FILE`): label `default`;
- `--ask-vault-pass`: a prompt, label `default`.

A file's password is its content with surrounding whitespace stripped (`FileVaultSecret`); an
executable file is run and its standard output, CR/LF stripped, is the password
(`ScriptVaultSecret`); an executable whose name ends in `-client` (optionally with an extension)
is run with `--vault-id LABEL` (`ClientScriptVaultSecret`). An empty password is refused.

Passwords are read on first need only, so an inventory without vault content never runs a
password script or prompts. Decryption tries the secret whose label matches a 1.2 envelope's
vault id first, then every other secret in order (ansible-core `VaultLib.decrypt_and_get_vault_id`
with the default `DEFAULT_VAULT_ID_MATCH=False`). Every decrypted scalar is a `Secret`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory.errors import InventoryError
from inventory.vault import (
    VaultFormatError,
    VaultPasswordError,
    VaultText,
    decrypt,
    parse_envelope,
)
from remoting.endpoint import Secret

DEFAULT_LABEL = "default"  # ansible-core C.DEFAULT_VAULT_IDENTITY
PROMPT_SOURCES = ("prompt", "prompt_ask_vault_pass")
_CLIENT_SCRIPT = re.compile(r"-client(\.[^.]+)?$")
SCRIPT_TIMEOUT_S = 60.0

Prompt = Callable[[str], str]


@dataclass(frozen=True)
class VaultIdentity:
    """One vault secret source: `label` and `source` (a path, or `prompt`), where it was given."""

    label: str
    source: str
    given_by: str  # e.g. "--vault-id", "ansible.cfg vault_password_file"

    @classmethod
    def parse(cls, text: str, given_by: str) -> VaultIdentity:
        """`label@source` or `source` (label `default`). Raises InventoryError when empty."""
        label, sep, source = text.partition("@")
        if not sep:
            label, source = DEFAULT_LABEL, text
        if not source.strip() or not label.strip():
            raise InventoryError(f"{given_by}: {text!r} must be LABEL@SOURCE or a password file")
        return cls(label.strip(), source.strip(), given_by)


@dataclass
class VaultKeyring:
    """The vault secrets of one load, read lazily, and a cache of decrypted envelopes.

    identities: in the order they are tried; prompt: asks for a password given a message (None
    when no one can answer). Relative password-file paths are taken from the working directory.
    """

    identities: Sequence[VaultIdentity] = ()
    prompt: Prompt | None = None
    _secrets: dict[int, bytes] = field(default_factory=dict)
    _plain: dict[str, tuple[str, str]] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """`label@source (given by)` for each identity: safe to print (no password)."""
        return [f"{i.label}@{i.source} ({i.given_by})" for i in self.identities]

    # ------------------------------------------------------------------------------- passwords

    def _password(self, index: int) -> bytes:
        cached = self._secrets.get(index)
        if cached is not None:
            return cached
        ident = self.identities[index]
        if ident.source in PROMPT_SOURCES:
            value = self._ask(ident)
        else:
            value = _read_source(ident)
        if not value:
            raise InventoryError(f"{ident.given_by}: the vault password from {ident.source} is empty")
        self._secrets[index] = value
        return value

    def _ask(self, ident: VaultIdentity) -> bytes:
        if self.prompt is None:
            raise InventoryError(f"{ident.given_by}: a vault password prompt needs a terminal on stdin")
        message = "Vault password: " if ident.label == DEFAULT_LABEL else f"Vault password ({ident.label}): "
        try:
            answer = self.prompt(message)
        except (EOFError, KeyboardInterrupt):
            raise InventoryError("no vault password entered") from None
        return answer.encode("utf-8")

    # ------------------------------------------------------------------------------ decryption

    def decrypt_text(self, text: str, *, file: Path | None, line: int | None, field: str | None) -> str:
        """The plaintext of one envelope, as text. Raises InventoryError (file, line, field) when
        no vault password is given, none decrypts it (wrong password), or the envelope is broken.
        The message never contains plaintext or a password."""
        cached = self._plain.get(text)
        if cached is not None:
            return cached[0]
        try:
            envelope = parse_envelope(text)
        except VaultFormatError as exc:
            raise InventoryError(f"bad vault data: {exc}", file=file, line=line, field=field) from None
        if not self.identities:
            raise InventoryError(
                "this value is vault-encrypted and no vault password was given; use --vault-password-file, "
                "--vault-id or --ask-vault-pass (or vault_password_file in ansible.cfg, "
                "ANSIBLE_VAULT_PASSWORD_FILE)",
                file=file, line=line, field=field,
            )
        order = list(range(len(self.identities)))
        if envelope.vault_id is not None:
            order.sort(key=lambda i: self.identities[i].label != envelope.vault_id)
        for index in order:
            try:
                plain = decrypt(envelope, self._password(index))
            except VaultPasswordError:
                continue
            except VaultFormatError as exc:
                raise InventoryError(f"bad vault data: {exc}", file=file, line=line, field=field) from None
            try:
                decoded = plain.decode("utf-8")
            except UnicodeDecodeError:
                raise InventoryError("the decrypted vault data is not UTF-8 text", file=file, line=line,
                                     field=field) from None
            self._plain[text] = (decoded, self.identities[index].label)
            return decoded
        tried = ", ".join(i.label for i in (self.identities[j] for j in order))
        label = f" (vault id {envelope.vault_id})" if envelope.vault_id else ""
        raise InventoryError(
            f"wrong vault password: no vault secret given ({tried}) decrypts this value{label}",
            file=file, line=line, field=field,
        )

    def decrypt_file_text(self, text: str, path: Path) -> str:
        """The plaintext of a wholly encrypted file (the caller has checked `is_encrypted`)."""
        return self.decrypt_text(text, file=path, line=1, field=None)

    def reveal_tree(self, data: Any, path: Path, *, wrap_all: bool = False, where: str = "") -> Any:
        """`data` (from yamlmarks) with every `VaultText` replaced by a `Secret` of its plaintext.

        wrap_all: also wrap every other string (the content of a wholly encrypted file is secret
        through and through). Containers are rebuilt only where something changed, keeping their
        line marks. Raises InventoryError as `decrypt_text`.
        """
        if isinstance(data, VaultText):
            return Secret(self.decrypt_text(str(data), file=path, line=data.line, field=where or None))
        if isinstance(data, str):
            return Secret(data) if wrap_all else data
        if isinstance(data, dict):
            for key in list(data):
                sub = f"{where}.{key}" if where else str(key)
                value = data[key]
                new = self.reveal_tree(value, path, wrap_all=wrap_all, where=sub)
                if new is not value:
                    data[key] = new
            return data
        if isinstance(data, list):
            for index, value in enumerate(data):
                new = self.reveal_tree(value, path, wrap_all=wrap_all, where=f"{where}[{index}]")
                if new is not value:
                    data[index] = new
            return data
        return data


def _read_source(ident: VaultIdentity) -> bytes:
    path = Path(os.path.expanduser(ident.source))
    if not path.exists():
        raise InventoryError(f"{ident.given_by}: the vault password file {path} does not exist")
    if path.is_dir():
        raise InventoryError(f"{ident.given_by}: {path} is a directory, not a vault password file")
    if os.access(path, os.X_OK):
        return _run_script(path, ident)
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise InventoryError(f"{ident.given_by}: cannot read {path}: {exc.strerror or exc}") from None


def _run_script(path: Path, ident: VaultIdentity) -> bytes:
    argv = [str(path)]
    if _CLIENT_SCRIPT.search(path.name):
        argv += ["--vault-id", ident.label]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=SCRIPT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError(f"{ident.given_by}: vault password script {path} failed to run: "
                             f"{type(exc).__name__}") from None
    if done.returncode == 2 and len(argv) > 1:
        raise InventoryError(f"{ident.given_by}: vault password client {path} knows no vault id {ident.label!r}")
    if done.returncode != 0:
        # stderr is not shown: a script may echo what it read; only the exit status is reported.
        raise InventoryError(f"{ident.given_by}: vault password script {path} exited with {done.returncode}")
    return done.stdout.strip(b"\r\n")


def build_keyring(
    *,
    vault_ids: Sequence[str] = (),
    password_files: Sequence[Path | str] = (),
    ask: bool = False,
    identity_list: Sequence[str] = (),
    config_password_file: Path | None = None,
    config_origins: dict[str, str] | None = None,
    prompt: Prompt | None = None,
) -> VaultKeyring:
    """The keyring for one run, in Ansible's order: ansible.cfg/env `vault_identity_list`, each
    `--vault-id`, each `--vault-password-file`, ansible.cfg/env `vault_password_file`, then
    `--ask-vault-pass` (ansible-core `CLI.setup_vault_secrets` + `build_vault_ids`).
    Raises InventoryError for a malformed `--vault-id`."""
    origins = config_origins or {}
    idents: list[VaultIdentity] = []
    for text in identity_list:
        idents.append(VaultIdentity.parse(text, origins.get("vault_identity_list", "vault_identity_list")))
    for text in vault_ids:
        idents.append(VaultIdentity.parse(text, "--vault-id"))
    for path in password_files:
        idents.append(VaultIdentity(DEFAULT_LABEL, str(path), "--vault-password-file"))
    if config_password_file is not None:
        idents.append(VaultIdentity(DEFAULT_LABEL, str(config_password_file),
                                    origins.get("vault_password_file", "vault_password_file")))
    if ask:
        idents.append(VaultIdentity(DEFAULT_LABEL, "prompt_ask_vault_pass", "--ask-vault-pass"))
    return VaultKeyring(identities=tuple(idents), prompt=prompt)
