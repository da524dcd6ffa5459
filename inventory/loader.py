"""`load_inventory`: read inventory sources (files or directories) into a resolved `Inventory`.

Format by file: `.yml`/`.yaml`/`.json` are YAML — kbfix format when the document has a
`kbfix_inventory` key, else Ansible YAML; anything else is Ansible INI, unless its first
non-comment line is `kbfix_inventory:` (a kbfix file without an extension). A directory is
read as Ansible reads one: its files in sorted order, recursively, skipping hidden files,
`group_vars`/`host_vars` and the extensions Ansible ignores (INVENTORY_IGNORE_EXTS). Several
sources merge in the order given. `group_vars/` and `host_vars/` are looked up beside each
file source and inside each directory source.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from inventory.ansible_ini import parse_ini
from inventory.ansible_yaml import parse_ansible_yaml
from inventory.credentials import CredentialContext, Prompt
from inventory.data import InventoryData
from inventory.dynamic import load_inventory_json, run_ansible_inventory, vault_values
from inventory.errors import InventoryError
from inventory.kbfix_yaml import is_kbfix_document, parse_kbfix
from inventory.model import Inventory
from inventory.resolve import Resolver
from inventory.security import security_warnings
from inventory.varsdirs import VarsDirs
from inventory.vault import is_encrypted
from inventory.vault_secrets import VaultKeyring
from inventory.yamlmarks import load_yaml_text, read_text

YAML_SUFFIXES = (".yml", ".yaml", ".json")
# ansible-core config INVENTORY_IGNORE_EXTS default: REJECT_EXTS + ('.orig', '.cfg', '.retry')
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
VARS_DIRS = ("group_vars", "host_vars")


def _looks_like_kbfix(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        return stripped.startswith("kbfix_inventory:")
    return False


def _parse_file(path: Path, inv: InventoryData, vault: VaultKeyring) -> None:
    try:
        text = read_text(path)
        if is_encrypted(text):  # a wholly vault-encrypted inventory file
            text = vault.decrypt_file_text(text, path)
        _parse_text(path, text, inv, vault)
    except RecursionError:
        # YAML or INI literals nested thousands deep: refuse rather than crash.
        raise InventoryError("data nested too deeply", file=path) from None


def _parse_text(path: Path, text: str, inv: InventoryData, vault: VaultKeyring) -> None:
    if path.suffix.lower() in YAML_SUFFIXES or _looks_like_kbfix(text):
        # An encrypted inventory's strings stay plain (host and group names are structure); its
        # secret-named variables are wrapped like any other (inventory.resolve.mask_secrets).
        data = vault.reveal_tree(load_yaml_text(text, path), path)
        if is_kbfix_document(data):
            parse_kbfix(data, path, inv)
        elif isinstance(data, dict) and data.get("plugin"):
            _parse_dynamic(path, "an inventory plugin configuration", inv, vault, "plugin")
        else:
            parse_ansible_yaml(data, path, inv)
        return
    if text.startswith("#!"):
        _parse_dynamic(path, "an inventory script", inv, vault)
        return
    parse_ini(text, path, inv)


def _parse_dynamic(path: Path, kind: str, inv: InventoryData, vault: VaultKeyring, field: str | None = None) -> None:
    """A script or plugin config, through `ansible-inventory --list` when installed (inventory.dynamic)."""
    raw = run_ansible_inventory(path, kind, field)
    load_inventory_json(vault.reveal_tree(vault_values(raw), path), path, inv)


def _directory_files(directory: Path) -> list[Path]:
    out: list[Path] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise InventoryError(f"cannot list directory: {exc.strerror or exc}", file=directory) from None
    for entry in entries:
        if entry.name.startswith(".") or entry.name in VARS_DIRS or entry.name.endswith(IGNORED_SUFFIXES):
            continue
        if entry.is_dir():
            out.extend(_directory_files(entry))
        else:
            out.append(entry)
    return out


def _digest(files: Sequence[Path], bases: Sequence[Path] = ()) -> str:
    """SHA-256 over each file's name and bytes. The name is the file's path relative to the
    inventory folder it was found under (resolved), so `-i inv.yaml`, `-i ./inv.yaml` and
    `-i /abs/inv.yaml` give one digest (issue 20 finding 12: a false "inventory changed"), and
    so does the same inventory checked out on another controller."""
    roots = [b.resolve() for b in bases]
    h = hashlib.sha256()
    for path in files:
        real = path.resolve()
        root = next((r for r in roots if real == r or r in real.parents), None)
        name = real.relative_to(root).as_posix() if root is not None else real.name
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            raise InventoryError(f"cannot read file: {exc.strerror or exc}", file=path) from None
        h.update(b"\0")
    return h.hexdigest()


def load_inventory(
    paths: Sequence[Path | str] | Path | str,
    *,
    env: Mapping[str, str] | None = None,
    prompt: Prompt | None = None,
    require_credentials: bool = True,
    vault: VaultKeyring | None = None,
) -> Inventory:
    """Load, merge and resolve inventory sources into an `Inventory`.

    paths: one or more inventory files or directories (merged in order). env: environment for
    password_env/KBFIX_PASSWORD (default os.environ). prompt: asks for a password, given a
    message; default getpass when stdin is a terminal. require_credentials: False leaves a
    missing password as None instead of prompting or failing (for list/graph/check). vault: the
    vault passwords (`inventory.vault_secrets.build_keyring`); without one, vault content is an
    error that says how to give a password. `!vault` values and the values of wholly encrypted
    files become `Secret`s; `{{ }}` in connection settings is rendered (`inventory.templating`).
    Raises InventoryError for every kind of bad input; nothing else escapes for bad files.
    """
    # Loading makes hundreds of thousands of small, acyclic objects; the cyclic collector's
    # passes over them cost about a fifth of a 10,000-host load and find nothing to free.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(paths, env, prompt, require_credentials, vault or VaultKeyring())
    except RecursionError:
        # Values nested thousands deep (group_vars files, variables being merged): refuse, not crash.
        raise InventoryError("inventory data is nested too deeply") from None
    finally:
        if gc_was_enabled:
            gc.enable()


def _load(
    paths: Sequence[Path | str] | Path | str,
    env: Mapping[str, str] | None,
    prompt: Prompt | None,
    require_credentials: bool,
    vault: VaultKeyring,
) -> Inventory:
    sources = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not sources:
        raise InventoryError("no inventory given; use -i FILE or set KBFIX_INVENTORY")
    inv = InventoryData()
    bases: list[Path] = []
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            bases.append(source)
            for path in _directory_files(source):
                _parse_file(path, inv, vault)
                files.append(path)
        elif source.exists():
            bases.append(source.parent)
            _parse_file(source, inv, vault)
            files.append(source)
        else:
            raise InventoryError("no such inventory file or directory", file=source)
    inv.reconcile()
    varsdirs = VarsDirs(list(dict.fromkeys(bases)), vault)
    creds = CredentialContext(env=os.environ if env is None else env, prompt=prompt, require=require_credentials)
    resolver = Resolver(inv, varsdirs, creds)
    hosts = {name: resolver.resolve_host(data) for name, data in inv.hosts.items()}
    groups = {name: resolver.resolve_group(name) for name in inv.groups}
    all_files = [*files, *dict.fromkeys(varsdirs.files_read)]
    return Inventory(hosts=hosts, groups=groups, sources=tuple(all_files), digest=_digest(all_files, list(dict.fromkeys(bases))),
                     warnings=security_warnings(hosts))
