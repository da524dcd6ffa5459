"""Which kbfix roles a host has: declared, or implied by its Ansible group names.

Data (role names, default group-name map and its source) lives in `roles.yaml` beside this
module. A host's roles come, first found wins, from a `kbfix_roles` or `roles` variable, from
its kbfix-format host `roles:` list, or else from the union of its groups' kbfix `roles:` lists
and the roles its group names imply through the role map;
an empty result means "discover from the host's registry" (the playbooks decide).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    text = resources.files("inventory").joinpath("roles.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def known_roles() -> tuple[str, ...]:
    """The role names kbfix knows (`wsus_server`, `configmgr_site_server`, `wsus_client`)."""
    return tuple(_data()["roles"])


def default_role_map() -> dict[str, tuple[str, ...]]:
    """role → group names implying it (lower case), as shipped in roles.yaml."""
    return {role: tuple(names) for role, names in _data()["group_names"].items()}


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def group_index(role_map: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Invert a role map to normalised group name → roles."""
    index: dict[str, list[str]] = {}
    for role, groups in role_map.items():
        for group in groups:
            index.setdefault(_norm(group), []).append(role)
    return {g: tuple(r) for g, r in index.items()}


def roles_from_groups(groups: Iterable[str], index: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Roles implied by `groups` (ordered, each once)."""
    out: dict[str, None] = {}
    for group in groups:
        for role in index.get(_norm(group), ()):
            out[role] = None
    return tuple(out)
