"""The resolved, read-only inventory that the rest of kbfix uses: `Host`, `Group`, `Inventory`.

Built once by `inventory.loader.load_inventory`; nothing here changes after that. Host
variables are already merged with Ansible's precedence, secrets in them are `Secret` objects,
and each WinRM host carries a ready `remoting.endpoint.Endpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remoting.endpoint import Endpoint


@dataclass(frozen=True)
class Host:
    """One inventory host, resolved.

    name: the inventory name (used in reports); groups: every group it belongs to, ancestors
    included, `all` excluded, sorted by name (Ansible's `group_names`); vars: effective variables (Ansible
    precedence; secret-looking values wrapped in Secret); roles: declared roles (empty = let
    discovery decide); site: from a `site` variable/field or a `site_<NAME>` group; endpoint:
    how to reach it, or None when skipped; skipped_reason: why it is skipped (e.g.
    "ansible_connection is ssh, not winrm"); password_source: where its password came from
    ("inventory variable ansible_password", "environment KBFIX_PASSWORD", "keyring …",
    "prompt") or None — never the password itself.
    """

    name: str
    groups: tuple[str, ...]
    vars: Mapping[str, Any]
    roles: tuple[str, ...]
    site: str | None
    endpoint: Endpoint | None
    skipped_reason: str | None
    password_source: str | None = None

    @property
    def skipped(self) -> bool:
        """True when kbfix will not connect to this host."""
        return self.endpoint is None


@dataclass(frozen=True)
class Group:
    """One group: direct `hosts` and `children` (names, in reading order), its own `vars`, `parents`."""

    name: str
    hosts: tuple[str, ...]
    children: tuple[str, ...]
    parents: tuple[str, ...]
    vars: Mapping[str, Any]
    depth: int = 0
    priority: int = 1


@dataclass(frozen=True)
class Inventory:
    """All hosts and groups from the inventory sources.

    hosts: name → Host, in inventory order; groups: name → Group (includes `all` and
    `ungrouped`); sources: every file read (inventory files, group_vars/host_vars files);
    digest: hex SHA-256 over the sources' names (relative to their inventory folder) and bytes, for the audit record;
    warnings: notes that did not stop loading.
    """

    hosts: Mapping[str, Host]
    groups: Mapping[str, Group]
    sources: tuple[Path, ...]
    digest: str
    warnings: tuple[str, ...] = field(default=())

    def select(self, limit: str | None = None) -> list[Host]:
        """Hosts matching an Ansible `--limit` pattern (all hosts when None), in inventory order.

        Raises InventoryError when a pattern matches nothing or the result is empty. See
        `inventory.patterns` for the syntax.
        """
        from inventory.patterns import select_hosts  # patterns imports this module

        return select_hosts(self, limit)

    def group_members(self, group: str) -> list[str]:
        """All host names in `group` and its descendants, in group order, each once."""
        out: dict[str, None] = {}
        stack = [group]
        seen: set[str] = set()
        while stack:
            name = stack.pop(0)
            if name in seen or name not in self.groups:
                continue
            seen.add(name)
            g = self.groups[name]
            if name == "all":
                return list(self.hosts)
            for h in g.hosts:
                out[h] = None
            stack.extend(g.children)
        return list(out)
