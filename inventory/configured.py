"""Load the inventory a command asked for, with ansible.cfg and the vault options applied.

One entry point for every command that loads an inventory (`kbfix check`, `kbfix inventory
check`, …): the `-i` sources, or else ansible.cfg's / ANSIBLE_INVENTORY's `inventory`; the vault
secrets from `--vault-id`, `--vault-password-file`, `--ask-vault-pass` and ansible.cfg's
`vault_identity_list`/`vault_password_file` (see `inventory.ansible_cfg`, `inventory.vault_secrets`).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from inventory.ansible_cfg import AnsibleConfig, load_config
from inventory.credentials import Prompt
from inventory.errors import InventoryError
from inventory.loader import load_inventory
from inventory.model import Inventory
from inventory.vault_secrets import build_keyring


@dataclass(frozen=True)
class InventoryRequest:
    """What the command line asked for: inventory sources and vault options (all may be empty)."""

    paths: Sequence[Path] = ()
    vault_ids: Sequence[str] = ()
    vault_password_files: Sequence[Path] = ()
    ask_vault_pass: bool = False


@dataclass(frozen=True)
class LoadedInventory:
    """The inventory and where its settings came from (for `kbfix inventory check`)."""

    inventory: Inventory
    config: AnsibleConfig
    sources_from: str  # "-i" or the ansible.cfg/env origin of the inventory setting
    vault_identities: tuple[str, ...] = field(default=())


def _terminal_prompt() -> Prompt | None:
    try:
        return getpass.getpass if sys.stdin is not None and sys.stdin.isatty() else None
    except (ValueError, OSError):
        return None


def load_configured(
    request: InventoryRequest,
    *,
    require_credentials: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    home: Path | None = None,
    prompt: Prompt | None = None,
    vault_prompt: Prompt | None = None,
) -> LoadedInventory:
    """Find ansible.cfg, build the vault keyring and load the inventory.

    env/cwd/home: for finding ansible.cfg and reading ANSIBLE_* (default: this process's);
    prompt: the WinRM password prompt (as `load_inventory`); vault_prompt: asks for a vault
    password (default getpass on a terminal). Raises InventoryError: no inventory given anywhere,
    a bad ansible.cfg, vault or inventory problems (file, line, field).
    """
    config = load_config(env, cwd, home)
    paths = list(request.paths)
    sources_from = "-i"
    if not paths:
        if not config.inventory:
            raise InventoryError("no inventory: pass -i FILE, set KBFIX_INVENTORY, or set inventory in ansible.cfg")
        paths = list(config.inventory)
        sources_from = config.origins.get("inventory", "ansible.cfg")
    keyring = build_keyring(
        vault_ids=request.vault_ids,
        password_files=request.vault_password_files,
        ask=request.ask_vault_pass,
        identity_list=config.vault_identity_list,
        config_password_file=config.vault_password_file,
        config_origins=dict(config.origins),
        prompt=vault_prompt if vault_prompt is not None else _terminal_prompt(),
    )
    inventory = load_inventory(paths, env=env, prompt=prompt, require_credentials=require_credentials, vault=keyring)
    if config.warnings:
        inventory = _with_warnings(inventory, config.warnings)
    return LoadedInventory(inventory, config, sources_from, tuple(keyring.describe()))


def _with_warnings(inventory: Inventory, extra: Sequence[str]) -> Inventory:
    return replace(inventory, warnings=(*inventory.warnings, *extra))
