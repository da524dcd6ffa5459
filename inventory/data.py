"""The mutable inventory being built while sources are read: groups, hosts, raw variables.

Mirrors Ansible's `InventoryData` (ansible-core `ansible/inventory/data.py`, `group.py`,
`host.py`): implicit `all` and `ungrouped` groups, parent/child links with a depth per group
(longest path from `all`), `ansible_group_priority` kept out of the variables, and after all
sources are read, `reconcile()` makes parentless groups children of `all` and puts hosts that
belong to no other group into `ungrouped`. Each variable remembers where it was set
(`Origin`) so that a bad value can be reported by file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from inventory.errors import InventoryError


class Origin(NamedTuple):
    """Where a value was written: a file and a 1-based line (None when unknown).

    A NamedTuple rather than a frozen dataclass: one is made per variable and host, and a
    tuple is several times cheaper to build on a 10,000-host inventory.
    """

    file: Path | None
    line: int | None = None


@dataclass
class Settings:
    """kbfix-format connection settings for one layer (defaults or one host); unset fields are absent."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)


@dataclass
class GroupData:
    """One group as read: its own vars, direct hosts, children and parents, in reading order."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    var_origins: dict[str, Origin] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)  # kbfix format: roles declared on the group
    priority: int = 1
    depth: int = 0
    origin: Origin | None = None


@dataclass
class HostData:
    """One host as read: its own vars, direct groups, kbfix settings and declared roles."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    var_origins: dict[str, Origin] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    roles: list[str] = field(default_factory=list)
    kbfix: bool = False  # defined by a kbfix-format source (WinRM by default)
    origin: Origin | None = None


class InventoryData:
    """Groups and hosts accumulated from one or more sources, in Ansible's model."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupData] = {"all": GroupData("all"), "ungrouped": GroupData("ungrouped")}
        self.hosts: dict[str, HostData] = {}
        self.defaults = Settings()  # kbfix `defaults:` connection settings
        self.add_child("all", "ungrouped")  # as Ansible's InventoryData.__init__: always the first child

    def add_group(self, name: str, origin: Origin | None = None) -> GroupData:
        """Return the group `name`, creating it if new."""
        group = self.groups.get(name)
        if group is None:
            group = GroupData(name, origin=origin)
            self.groups[name] = group
        return group

    def add_host(self, name: str, group: str | None, port: int | None, origin: Origin) -> HostData:
        """Add (or find) host `name`, put it in `group`, and set `ansible_port` if a port was given."""
        host = self.hosts.get(name)
        if host is None:
            host = HostData(name, origin=origin)
            self.hosts[name] = host
        if group is not None and group != "all":
            # `host.groups` mirrors `g.hosts` and is short: testing it keeps loading linear in the
            # group's size (`name in g.hosts` made 200,000 hosts in one INI group take minutes).
            if group not in host.groups:
                self.add_group(group).hosts.append(name)
                host.groups.append(group)
        if port is not None:
            self.set_host_var(name, "ansible_port", port, origin)
        return host

    def set_group_var(self, group: str, key: str, value: Any, origin: Origin) -> None:
        """Set a group variable; `ansible_group_priority` sets the merge priority instead."""
        g = self.groups[group]
        if key == "ansible_group_priority":
            try:
                g.priority = int(value)
            except (TypeError, ValueError, OverflowError):
                raise InventoryError(
                    "ansible_group_priority must be an integer", file=origin.file, line=origin.line,
                    field=f"{group}.vars.ansible_group_priority",
                ) from None
            return
        g.vars[key] = value
        g.var_origins[key] = origin

    def set_host_var(self, host: str, key: str, value: Any, origin: Origin) -> None:
        """Set a host variable."""
        h = self.hosts[host]
        h.vars[key] = value
        h.var_origins[key] = origin

    def add_child(self, parent: str, child: str, origin: Origin | None = None) -> None:
        """Make `child` a child group of `parent`; a cycle is an InventoryError."""
        if parent == child or self._is_ancestor(child, parent):
            raise InventoryError(
                f"adding group {child!r} as a child of {parent!r} creates a loop",
                file=origin.file if origin else None, line=origin.line if origin else None,
                field=f"{parent}.children",
            )
        p, c = self.groups[parent], self.groups[child]
        if child not in p.children:
            p.children.append(child)
            c.parents.append(parent)

    def _is_ancestor(self, candidate: str, group: str) -> bool:
        """True when `candidate` is `group` or one of its descendants' parents chain reaches it."""
        stack, seen = [group], set()
        while stack:
            name = stack.pop()
            if name == candidate:
                return True
            if name in seen:
                continue
            seen.add(name)
            stack.extend(self.groups[name].parents)
        return False

    def reconcile(self) -> None:
        """Attach parentless groups to `all`, fill `ungrouped`, and compute each group's depth."""
        all_group = self.groups["all"]
        for name, g in self.groups.items():
            if name != "all" and not g.parents:
                self.add_child("all", name)
        ungrouped = self.groups["ungrouped"]
        leaving: set[str] = set()
        for name, h in self.hosts.items():
            others = [g for g in h.groups if g != "ungrouped"]
            if not others and "ungrouped" not in h.groups:
                ungrouped.hosts.append(name)
                h.groups.append("ungrouped")
            elif others and "ungrouped" in h.groups:
                h.groups.remove("ungrouped")
                leaving.add(name)
        if leaving:  # one pass, not a list.remove per host (quadratic on a large `ungrouped`)
            ungrouped.hosts = [n for n in ungrouped.hosts if n not in leaving]
        # Depth = longest path from `all` (Ansible's Group._check_children_depth), by relaxation
        # in topological order; the graph is acyclic because add_child refuses loops.
        all_group.depth = 0
        order = self._topological()
        for name in order:
            g = self.groups[name]
            for child in g.children:
                c = self.groups[child]
                c.depth = max(c.depth, g.depth + 1)

    def _topological(self) -> list[str]:
        indegree = {name: len(g.parents) for name, g in self.groups.items()}
        ready = [name for name, n in indegree.items() if n == 0]
        order: list[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            for child in self.groups[name].children:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        return order

    def ancestors(self, group: str) -> list[str]:
        """`group` and every group above it (each once)."""
        seen: dict[str, None] = {}
        stack = [group]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen[name] = None
            stack.extend(self.groups[name].parents)
        return list(seen)
