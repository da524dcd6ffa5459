"""From the raw model to resolved hosts: variable precedence, roles, site, templated settings.

Variable precedence is Ansible's (ansible-core `VariableManager.get_vars` and
`inventory/helpers.py::sort_groups`), lowest first: the `all` group's inventory vars,
`group_vars/all`; every other group's inventory vars, then every other group's `group_vars/`
files, each in (depth, ansible_group_priority, name) order; the host's inventory vars; its
`host_vars/` files. Later values replace earlier ones (DEFAULT_HASH_BEHAVIOUR=replace).

The connection settings those variables make (transport, authentication, timeouts) become an
`Endpoint` in `inventory.endpoints`; secret-named variables are wrapped by `inventory.masking`.
Their names are re-exported here for the modules that import them from this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from inventory.credentials import CredentialContext
from inventory.data import HostData, InventoryData, Origin
from inventory.endpoints import (
    ANSIBLE_VARS,
    WINRM_HTTP_PORT,
    ConnectionSettings,
    EndpointBuilder,
    Setting,
    error_at,
)
from inventory.errors import did_you_mean
from inventory.masking import is_secret_name, mask_item, mask_secrets
from inventory.model import Group, Host
from inventory.roles import default_role_map, group_index, known_roles, roles_from_groups
from inventory.templating import Renderer, TemplateProblem, is_template
from inventory.varsdirs import VarsDirs
from remoting.endpoint import Endpoint, Secret

__all__ = ["ANSIBLE_VARS", "ROLE_MAP_VAR", "ROLE_VARS", "WINRM_HTTP_PORT", "ConnectionSettings", "Resolver",
           "is_secret_name", "mask_secrets"]

ROLE_VARS = ("roles", "kbfix_roles")  # later wins
ROLE_MAP_VAR = "kbfix_role_map"


class Resolver:
    """Turns an `InventoryData` plus vars directories into `Host` and `Group` objects."""

    def __init__(self, inv: InventoryData, varsdirs: VarsDirs, creds: CredentialContext) -> None:
        self.inv = inv
        self.varsdirs = varsdirs
        self.creds = creds
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._group_files: dict[str, list[tuple[dict[str, Any], dict[str, Origin]]]] = {}
        self._group_layer: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Origin]]] = {}
        self._endpoints = EndpointBuilder(creds)
        self._masked_groups: dict[tuple[str, ...], dict[str, Any]] = {}
        self._derived: dict[tuple[str, ...], tuple[dict[str, Setting], tuple[str, ...], str | None]] = {}
        self._host_overrides: dict[str, str] = {name: s for s, names in ANSIBLE_VARS.items() for name in names}
        all_vars = inv.groups["all"].vars
        self._role_index = group_index(self._role_map(all_vars))

    def _role_map(self, all_vars: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        custom = all_vars.get(ROLE_MAP_VAR)
        if custom is None:
            return default_role_map()
        origin = self.inv.groups["all"].var_origins.get(ROLE_MAP_VAR)
        if not isinstance(custom, dict) or not all(
            isinstance(v, list) and all(isinstance(g, str) for g in v) for v in custom.values()
        ):
            raise error_at("must map each role to a list of group names", origin, ROLE_MAP_VAR)
        for role in custom:
            if role not in known_roles():
                raise error_at(f"unknown role {role!r}" + did_you_mean(str(role), known_roles()), origin, ROLE_MAP_VAR)
        return {str(r): tuple(v) for r, v in custom.items()}

    def ancestors(self, group: str) -> tuple[str, ...]:
        """The group's ancestor groups, nearest first (cached per resolver)."""
        cached = self._ancestors.get(group)
        if cached is None:
            cached = tuple(self.inv.ancestors(group))
            self._ancestors[group] = cached
        return cached

    def group_files(self, group: str) -> list[tuple[dict[str, Any], dict[str, Origin]]]:
        """(vars, origins) of each `group_vars/<group>` file or folder entry, in load order (cached)."""
        files = self._group_files.get(group)
        if files is None:
            files = [(f.vars, f.origins) for f in self.varsdirs.load("group_vars", group)]
            self._group_files[group] = files
        return files

    def _groups_of(self, host: HostData) -> tuple[str, ...]:
        names: set[str] = set()
        for g in host.groups:
            names.update(self.ancestors(g))
        names.discard("all")
        groups = self.inv.groups
        return tuple(sorted(names, key=lambda n: (groups[n].depth, groups[n].priority, n)))

    def _group_vars(self, ordered: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Origin]]:
        cached = self._group_layer.get(ordered)
        if cached is not None:
            return cached
        merged: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        all_group = self.inv.groups["all"]
        merged.update(all_group.vars)
        origins.update(all_group.var_origins)
        for vars_, orig in self.group_files("all"):
            merged.update(vars_)
            origins.update(orig)
        for name in ordered:
            g = self.inv.groups[name]
            merged.update(g.vars)
            origins.update(g.var_origins)
        for name in ordered:
            for vars_, orig in self.group_files(name):
                merged.update(vars_)
                origins.update(orig)
        self._group_layer[ordered] = (merged, origins)
        return merged, origins

    def _group_derived(self, ordered: tuple[str, ...]) -> tuple[dict[str, Setting], tuple[str, ...], str | None]:
        """Per distinct group set: settings from group-level vars, roles from groups, site from names."""
        cached = self._derived.get(ordered)
        if cached is None:
            merged, origins = self._group_vars(ordered)
            settings: dict[str, Setting] = {}
            for key, value in self.inv.defaults.values.items():
                settings[key] = Setting(value, f"defaults.{key}", self.inv.defaults.origins.get(key))
            for setting, names in ANSIBLE_VARS.items():
                for name in names:
                    if name in merged:
                        settings[setting] = Setting(merged[name], name, origins.get(name))
            roles: dict[str, None] = {}
            for name in ordered:
                roles.update(dict.fromkeys(self.inv.groups[name].roles))
            roles.update(dict.fromkeys(roles_from_groups(ordered, self._role_index)))
            site = next((n[5:] for n in ordered if n.lower().startswith("site_") and len(n) > 5), None)
            cached = (settings, tuple(roles), site)
            self._derived[ordered] = cached
        return cached

    def host_vars(self, host: HostData) -> tuple[tuple[str, ...], dict[str, Any], dict[str, Origin]]:
        """(groups in merge order, effective vars, origin of each var) for one host."""
        ordered = self._groups_of(host)
        group_vars, group_origins = self._group_vars(ordered)
        merged = dict(group_vars)
        origins = dict(group_origins)
        merged.update(host.vars)
        origins.update(host.var_origins)
        for f in self.varsdirs.load("host_vars", host.name):
            merged.update(f.vars)
            origins.update(f.origins)
        return ordered, merged, origins

    def _masked_vars(self, ordered: tuple[str, ...], merged: dict[str, Any], host_keys: set[str]) -> dict[str, Any]:
        """`merged` with secrets wrapped; the group-level part is masked once per group set."""
        masked = self._masked_groups.get(ordered)
        if masked is None:
            masked = self._masked_groups[ordered] = mask_secrets(self._group_vars(ordered)[0])
        out = dict(masked)
        for key in host_keys:
            out[key] = mask_item(str(key), merged[key], {})
        return out

    def _host_level_keys(self, host: HostData) -> set[str]:
        keys = set(host.vars)
        for f in self.varsdirs.load("host_vars", host.name):
            keys.update(f.vars)
        return keys

    def resolve_host(self, host: HostData) -> Host:
        """The effective `Host`: merged vars (Ansible precedence), roles, site and Endpoint.
        Raises InventoryError naming the file, line and field of a bad setting."""
        ordered, merged, origins = self.host_vars(host)
        host_keys = self._host_level_keys(host)
        settings = self._render_settings(host, ordered, merged, self._settings(host, ordered, merged, origins, host_keys))
        roles = self._roles(host, ordered, merged, origins)
        site = self._site(settings, ordered)
        endpoint: Endpoint | None = None
        skipped: str | None = None
        password_source: str | None = None
        connection = settings.get("connection")
        conn_value = str(connection.value) if connection else ("winrm" if host.kbfix else None)
        if conn_value is None:
            skipped = "ansible_connection is not set (Ansible's default is ssh), not winrm"
        elif conn_value != "winrm":
            skipped = f"ansible_connection is {conn_value}, not winrm"
        else:
            endpoint, password_source = self._endpoints.endpoint(host, settings)
        return Host(
            name=host.name,
            groups=tuple(sorted(ordered)),
            vars=MappingProxyType(self._masked_vars(ordered, merged, host_keys)),
            roles=roles,
            site=site,
            endpoint=endpoint,
            skipped_reason=skipped,
            password_source=password_source,
        )

    def _settings(
        self, host: HostData, ordered: tuple[str, ...], merged: dict[str, Any], origins: dict[str, Origin],
        host_keys: set[str],
    ) -> dict[str, Setting]:
        group_settings, _, _ = self._group_derived(ordered)
        out = dict(group_settings)
        touched = {self._host_overrides[k] for k in host_keys if k in self._host_overrides}
        for setting in touched:  # re-read only the settings host-level variables can change
            for name in ANSIBLE_VARS[setting]:
                if name in merged:
                    out[setting] = Setting(merged[name], name, origins.get(name))
        for key, value in host.settings.values.items():
            out[key] = Setting(value, f"hosts.{host.name}.{key}", host.settings.origins.get(key))
        return out

    def _render_settings(
        self, host: HostData, ordered: tuple[str, ...], merged: dict[str, Any], settings: dict[str, Setting]
    ) -> dict[str, Setting]:
        """Settings whose value holds `{{ }}` rendered with the host's variables (inventory.templating).
        Raises InventoryError naming the file, line and variable when one cannot be rendered."""
        renderer: Renderer | None = None
        for key, s in settings.items():
            if not is_template(s.value.reveal() if isinstance(s.value, Secret) else s.value):
                continue
            if renderer is None:
                magic = {"inventory_hostname": host.name, "inventory_hostname_short": host.name.split(".")[0],
                         "group_names": sorted(ordered)}
                renderer = Renderer(merged, magic)
            try:
                value = renderer.render(s.value)
            except TemplateProblem as exc:
                problem = str(exc)
                if (key == "password" or is_secret_name(s.source)) and problem.startswith("template syntax error"):
                    problem = "template syntax error (details withheld: the value is a secret; use !unsafe for " \
                              "a password that contains '{{' or '{%')"
                if exc.variable and exc.variable not in problem:
                    problem += f" (variable {exc.variable!r})"
                if exc.variable and exc.variable not in merged:
                    problem += did_you_mean(exc.variable, merged)
                raise error_at(f"host {host.name!r}: cannot render {s.source}: {problem}; "
                           "nothing was sent to any host", s.origin, s.source) from None
            if key == "password" or is_secret_name(s.source):
                value = value if isinstance(value, Secret) else Secret(str(value))
            settings[key] = Setting(value, s.source, s.origin)
        return settings

    def _site(self, settings: dict[str, Setting], ordered: tuple[str, ...]) -> str | None:
        if "site" in settings and settings["site"].value is not None:
            value = settings["site"].value
            return value.reveal() if isinstance(value, Secret) else str(value)
        return self._group_derived(ordered)[2]

    def _roles(
        self, host: HostData, ordered: tuple[str, ...], merged: dict[str, Any], origins: dict[str, Origin]
    ) -> tuple[str, ...]:
        declared: Any = None
        source = ""
        for name in ROLE_VARS:
            if name in merged:
                declared, source = merged[name], name
        if declared is not None and is_template(declared):
            rendered = self._render_settings(host, ordered, merged,
                                             {"roles": Setting(declared, source, origins.get(source))})
            declared = rendered["roles"].value
        if declared is not None:
            if isinstance(declared, str):
                declared = [r.strip() for r in declared.split(",") if r.strip()]
            if not isinstance(declared, list) or not all(isinstance(r, str) for r in declared):
                raise error_at(f"host {host.name!r}: must be a list of role names", origins.get(source), source)
            for role in declared:
                if role not in known_roles():
                    raise error_at(
                        f"host {host.name!r}: unknown role {role!r}" + did_you_mean(role, known_roles()),
                        origins.get(source), source,
                    )
            return tuple(dict.fromkeys(declared))
        if host.roles:  # a host's own list wins over its groups', as a host var beats group vars
            return tuple(dict.fromkeys(host.roles))
        return self._group_derived(ordered)[1]

    def resolve_group(self, name: str) -> Group:
        """The `Group` with its own vars merged over its ancestors' (Ansible precedence)."""
        g = self.inv.groups[name]
        merged = dict(g.vars)
        for vars_, _ in self.group_files(name):
            merged.update(vars_)
        return Group(
            name=name,
            hosts=tuple(g.hosts),
            children=tuple(g.children),
            parents=tuple(g.parents),
            vars=MappingProxyType(mask_secrets(merged)),
            depth=g.depth,
            priority=g.priority,
        )

