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
from inventory.errors import InventoryError
from inventory.kbfix_yaml import is_kbfix_document, parse_kbfix
from inventory.model import Inventory
from inventory.resolve import Resolver
from inventory.security import security_warnings
from inventory.varsdirs import VarsDirs
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


def _parse_file(path: Path, inv: InventoryData) -> None:
    try:
        _parse_text(path, read_text(path), inv)
    except RecursionError:
        # YAML or INI literals nested thousands deep: refuse rather than crash.
        raise InventoryError("data nested too deeply", file=path) from None


def _parse_text(path: Path, text: str, inv: InventoryData) -> None:
    if path.suffix.lower() in YAML_SUFFIXES or _looks_like_kbfix(text):
        data = load_yaml_text(text, path)
        if is_kbfix_document(data):
            parse_kbfix(data, path, inv)
        else:
            parse_ansible_yaml(data, path, inv)
        return
    if text.startswith("#!"):
        raise InventoryError(
            "dynamic inventory scripts are not run by kbfix; export the inventory with "
            "`ansible-inventory -i SCRIPT --list -y > inventory.yml` and use that file",
            file=path, line=1,
        )
    parse_ini(text, path, inv)


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
) -> Inventory:
    """Load, merge and resolve inventory sources into an `Inventory`.

    paths: one or more inventory files or directories (merged in order). env: environment for
    password_env/KBFIX_PASSWORD (default os.environ). prompt: asks for a password, given a
    message; default getpass when stdin is a terminal. require_credentials: False leaves a
    missing password as None instead of prompting or failing (for list/graph/check).
    Raises InventoryError for every kind of bad input; nothing else escapes for bad files.
    """
    # Loading makes hundreds of thousands of small, acyclic objects; the cyclic collector's
    # passes over them cost about a fifth of a 10,000-host load and find nothing to free.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(paths, env, prompt, require_credentials)
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
                _parse_file(path, inv)
                files.append(path)
        elif source.exists():
            bases.append(source.parent)
            _parse_file(source, inv)
            files.append(source)
        else:
            raise InventoryError("no such inventory file or directory", file=source)
    inv.reconcile()
    varsdirs = VarsDirs(list(dict.fromkeys(bases)))
    creds = CredentialContext(env=os.environ if env is None else env, prompt=prompt, require=require_credentials)
    resolver = Resolver(inv, varsdirs, creds)
    hosts = {name: resolver.resolve_host(data) for name, data in inv.hosts.items()}
    groups = {name: resolver.resolve_group(name) for name in inv.groups}
    all_files = [*files, *dict.fromkeys(varsdirs.files_read)]
    return Inventory(hosts=hosts, groups=groups, sources=tuple(all_files), digest=_digest(all_files, list(dict.fromkeys(bases))),
                     warnings=security_warnings(hosts))
