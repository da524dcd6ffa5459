"""`group_vars/` and `host_vars/` beside an inventory, found and read as Ansible does.

Follows ansible-core's `host_group_vars` vars plugin and `DataLoader.find_vars_files`: for an
entity (group or host) named N under a base directory (the inventory file's directory, or the
inventory directory itself), read `N`, `N.yml`, `N.yaml` or `N.json`, or every file of a
directory `N/` (recursively, in sorted order, skipping hidden files and backups ending in `~`,
keeping files with no extension or one of those three). Each file must be a YAML mapping. A file
may be vault-encrypted as a whole, and values may be `!vault` (decrypted by `inventory.vault_secrets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inventory.data import Origin
from inventory.errors import InventoryError
from inventory.vault import is_encrypted
from inventory.vault_secrets import VaultKeyring
from inventory.yamlmarks import MarkedDict, kind, load_yaml_text, read_text

_EXTENSIONS = ("", ".yml", ".yaml", ".json")


@dataclass(frozen=True)
class VarsFile:
    """One vars file read: its path, its variables and each variable's origin."""

    path: Path
    vars: dict[str, Any]
    origins: dict[str, Origin]


class VarsDirs:
    """Reads group_vars/host_vars under a list of base directories, once per entity."""

    def __init__(self, bases: list[Path], vault: VaultKeyring | None = None) -> None:
        self.bases = bases
        self.vault = vault or VaultKeyring()
        self.files_read: list[Path] = []
        # Listing each directory once keeps a 10,000-host inventory from doing 40,000 stat calls.
        self._listing: dict[Path, dict[str, Path]] = {}
        self._dirs: dict[tuple[Path, str], Path] = {}
        self._loaded: dict[tuple[str, str], list[VarsFile]] = {}

    def _entries(self, directory: Path) -> dict[str, Path]:
        listing = self._listing.get(directory)
        if listing is None:
            listing = {p.name: p for p in directory.iterdir()} if directory.is_dir() else {}
            self._listing[directory] = listing
        return listing

    def load(self, kind: str, name: str) -> list[VarsFile]:
        """All vars files for entity `name` under `<base>/<kind>/` (kind is group_vars or host_vars)."""
        cached = self._loaded.get((kind, name))
        if cached is not None:
            return cached
        found: list[VarsFile] = []
        for base in self.bases:
            directory = self._dirs.get((base, kind))
            if directory is None:
                directory = self._dirs[(base, kind)] = base / kind
            entries = self._entries(directory)
            if not entries:
                continue
            for ext in _EXTENSIONS:
                candidate = entries.get(name + ext)
                if candidate is None:
                    continue
                if candidate.is_dir():
                    found.extend(self._read(p) for p in _dir_files(candidate))
                else:
                    found.append(self._read(candidate))
        self._loaded[(kind, name)] = found
        return found

    def _read(self, path: Path) -> VarsFile:
        self.files_read.append(path)
        text = read_text(path)
        encrypted = is_encrypted(text)
        if encrypted:  # e.g. group_vars/windows/vault.yml, encrypted whole with `ansible-vault encrypt`
            text = self.vault.decrypt_file_text(text, path)
        data = self.vault.reveal_tree(load_yaml_text(text, path), path, wrap_all=encrypted)
        if data is None:
            return VarsFile(path, {}, {})
        if not isinstance(data, dict):
            raise InventoryError(
                f"a vars file must hold a mapping of variables, not a {kind(data)}", file=path, line=1
            )
        origins: dict[str, Origin] = {}
        for key in data:
            if not isinstance(key, str):
                line = data.key_lines.get(key) if isinstance(data, MarkedDict) else None
                raise InventoryError("a variable name must be a string", file=path, line=line, field=str(key))
            origins[key] = Origin(path, data.key_lines.get(key) if isinstance(data, MarkedDict) else None)
        return VarsFile(path, dict(data), origins)


def _dir_files(directory: Path) -> list[Path]:
    out: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir():
            out.extend(_dir_files(entry))
        elif entry.suffix in _EXTENSIONS:
            out.append(entry)
    return out
