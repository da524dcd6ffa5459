"""From the raw model to resolved hosts: variable precedence, connection settings, roles, site.

Variable precedence is Ansible's (ansible-core `VariableManager.get_vars` and
`inventory/helpers.py::sort_groups`), lowest first: the `all` group's inventory vars,
`group_vars/all`; every other group's inventory vars, then every other group's `group_vars/`
files, each in (depth, ansible_group_priority, name) order; the host's inventory vars; its
`host_vars/` files. Later values replace earlier ones (DEFAULT_HASH_BEHAVIOUR=replace).

Connection settings, lowest first: kbfix `defaults:`; the Ansible connection variables
(`ANSIBLE_VARS`, mapped as Ansible's winrm connection plugin reads them); kbfix host fields.
They are validated with a pydantic model, so a bad value names the variable, file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inventory.credentials import CredentialContext, resolve_password
from inventory.data import HostData, InventoryData, Origin
from inventory.errors import InventoryError, did_you_mean
from inventory.model import Group, Host
from inventory.roles import default_role_map, group_index, known_roles, roles_from_groups
from inventory.templating import Renderer, TemplateProblem, is_template
from inventory.varsdirs import VarsDirs
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.redaction import is_secret_key

# setting → inventory variables that set it; when several are present the last listed wins
# (the more specific name), as in Ansible's connection-plugin option resolution.
ANSIBLE_VARS: dict[str, tuple[str, ...]] = {
    "connection": ("ansible_connection",),
    "address": ("ansible_host",),
    "port": ("ansible_port",),
    "scheme": ("ansible_winrm_scheme",),
    "path": ("ansible_winrm_path",),
    "transport": ("ansible_winrm_transport",),
    "username": ("ansible_user", "ansible_winrm_user"),
    "password": ("ansible_password", "ansible_winrm_pass", "ansible_winrm_password"),
    "cert_validation": ("ansible_winrm_server_cert_validation",),
    "ca_trust_path": ("ansible_winrm_ca_trust_path",),
    "message_encryption": ("ansible_winrm_message_encryption",),
    "allow_unencrypted": ("kbfix_allow_unencrypted",),
    "timeouts.connect": ("ansible_winrm_connection_timeout",),
    "timeouts.operation": ("ansible_winrm_operation_timeout_sec",),
    "timeouts.read": ("ansible_winrm_read_timeout_sec",),
    "timeouts.command": ("kbfix_command_timeout",),
    "password_env": ("kbfix_password_env",),
    "password_keyring": ("kbfix_password_keyring",),
    "service": ("ansible_winrm_service",),
    "kerberos_hostname_override": ("ansible_winrm_kerberos_hostname_override",),
    "kerberos_delegation": ("ansible_winrm_kerberos_delegation",),
    "site": ("site", "kbfix_site"),
}
# setting → ConnectionSettings field (connection, password and site are handled apart)
_FIELD_OF: dict[str, str] = {
    key: key.split(".", 1)[1] if key.startswith("timeouts.") else key
    for key in ANSIBLE_VARS
    if key not in ("connection", "password", "site")
}
ROLE_VARS = ("roles", "kbfix_roles")  # later wins
ROLE_MAP_VAR = "kbfix_role_map"
WINRM_HTTP_PORT = 5985  # Ansible winrm plugin: scheme defaults to http only on this port, else https

_TRANSPORT_ALIASES = {"plaintext": "basic", "ssl": "basic"}  # pywinrm's names for Basic over http/https

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class ConnectionSettings(BaseModel):
    """Validated effective connection settings of one WinRM host (lax: INI values are strings)."""

    model_config = ConfigDict(extra="forbid")

    address: str
    port: Port | None = None
    scheme: Literal["https", "http"] | None = None
    path: str = "/wsman"
    transport: Literal["ntlm", "kerberos", "basic", "credssp", "certificate"] = "ntlm"
    username: str | None = None
    cert_validation: Literal["validate", "ignore"] = "validate"
    ca_trust_path: str | None = None
    message_encryption: Literal["auto", "always", "never"] = "auto"
    allow_unencrypted: bool = False
    connect: Seconds | None = None
    operation: Seconds | None = None
    read: Seconds | None = None
    command: Seconds | None = None
    password_env: str | None = None
    password_keyring: str | None = None
    service: str = "HTTP"
    kerberos_hostname_override: str | None = None
    kerberos_delegation: bool = False


@lru_cache(maxsize=4096)
def is_secret_name(key: str) -> bool:
    """True for variable names whose values are credentials: the one rule,
    `remoting.redaction.is_secret_key`."""
    return is_secret_key(key)


def mask_secrets(value: Any, key: str = "") -> Any:
    """Wrap values under secret-looking keys (recursively) in Secret; dicts and lists are copied.

    A dict or list that appears several times in `value` (a YAML alias) is copied once per
    secret-ness of the key above it and shared in the result, as it was in the input: masking
    stays linear in the file, where copying every reference expanded an alias bomb to 10^9 nodes
    (issue 20 finding 5).
    """
    return _mask(value, key, {})


def _mask(value: Any, key: str, memo: dict[tuple[int, bool], Any]) -> Any:
    if isinstance(value, dict):
        # A dict's items are masked by their own keys: the key above does not matter.
        slot = (id(value), False)
        if slot not in memo:
            out: dict[Any, Any] = {}
            memo[slot] = out
            out.update((k, _mask_item(str(k), v, memo)) for k, v in value.items())
        return memo[slot]
    if isinstance(value, list):
        slot = (id(value), is_secret_name(key))
        if slot not in memo:
            out_list: list[Any] = []
            memo[slot] = out_list
            out_list.extend(_mask_item(key, v, memo) for v in value)
        return memo[slot]
    return value


def _mask_item(key: str, value: Any, memo: dict[tuple[int, bool], Any]) -> Any:
    if isinstance(value, (dict, list)):
        return _mask(value, key, memo)
    if value is None or isinstance(value, Secret) or not is_secret_name(key):
        return value
    return Secret(str(value))


@dataclass
class _Setting:
    value: Any
    source: str  # the variable or kbfix key that set it
    origin: Origin | None


class Resolver:
    """Turns an `InventoryData` plus vars directories into `Host` and `Group` objects."""

    def __init__(self, inv: InventoryData, varsdirs: VarsDirs, creds: CredentialContext) -> None:
        self.inv = inv
        self.varsdirs = varsdirs
        self.creds = creds
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._group_files: dict[str, list[tuple[dict[str, Any], dict[str, Origin]]]] = {}
        self._group_layer: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Origin]]] = {}
        self._timeouts_cache: dict[tuple[float, float, float, float], Timeouts] = {}
        self._masked_groups: dict[tuple[str, ...], dict[str, Any]] = {}
        self._derived: dict[tuple[str, ...], tuple[dict[str, _Setting], tuple[str, ...], str | None]] = {}
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
            raise _err("must map each role to a list of group names", origin, ROLE_MAP_VAR)
        for role in custom:
            if role not in known_roles():
                raise _err(f"unknown role {role!r}" + did_you_mean(str(role), known_roles()), origin, ROLE_MAP_VAR)
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

    def _group_derived(self, ordered: tuple[str, ...]) -> tuple[dict[str, _Setting], tuple[str, ...], str | None]:
        """Per distinct group set: settings from group-level vars, roles from groups, site from names."""
        cached = self._derived.get(ordered)
        if cached is None:
            merged, origins = self._group_vars(ordered)
            settings: dict[str, _Setting] = {}
            for key, value in self.inv.defaults.values.items():
                settings[key] = _Setting(value, f"defaults.{key}", self.inv.defaults.origins.get(key))
            for setting, names in ANSIBLE_VARS.items():
                for name in names:
                    if name in merged:
                        settings[setting] = _Setting(merged[name], name, origins.get(name))
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
            out[key] = _mask_item(str(key), merged[key], {})
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
            endpoint, password_source = self._endpoint(host, settings)
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
    ) -> dict[str, _Setting]:
        group_settings, _, _ = self._group_derived(ordered)
        out = dict(group_settings)
        touched = {self._host_overrides[k] for k in host_keys if k in self._host_overrides}
        for setting in touched:  # re-read only the settings host-level variables can change
            for name in ANSIBLE_VARS[setting]:
                if name in merged:
                    out[setting] = _Setting(merged[name], name, origins.get(name))
        for key, value in host.settings.values.items():
            out[key] = _Setting(value, f"hosts.{host.name}.{key}", host.settings.origins.get(key))
        return out

    def _render_settings(
        self, host: HostData, ordered: tuple[str, ...], merged: dict[str, Any], settings: dict[str, _Setting]
    ) -> dict[str, _Setting]:
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
                raise _err(f"host {host.name!r}: cannot render {s.source}: {problem}; "
                           "nothing was sent to any host", s.origin, s.source) from None
            if key == "password" or is_secret_name(s.source):
                value = value if isinstance(value, Secret) else Secret(str(value))
            settings[key] = _Setting(value, s.source, s.origin)
        return settings

    def _site(self, settings: dict[str, _Setting], ordered: tuple[str, ...]) -> str | None:
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
                                             {"roles": _Setting(declared, source, origins.get(source))})
            declared = rendered["roles"].value
        if declared is not None:
            if isinstance(declared, str):
                declared = [r.strip() for r in declared.split(",") if r.strip()]
            if not isinstance(declared, list) or not all(isinstance(r, str) for r in declared):
                raise _err(f"host {host.name!r}: must be a list of role names", origins.get(source), source)
            for role in declared:
                if role not in known_roles():
                    raise _err(
                        f"host {host.name!r}: unknown role {role!r}" + did_you_mean(role, known_roles()),
                        origins.get(source), source,
                    )
            return tuple(dict.fromkeys(declared))
        if host.roles:  # a host's own list wins over its groups', as a host var beats group vars
            return tuple(dict.fromkeys(host.roles))
        return self._group_derived(ordered)[1]

    def _endpoint(self, host: HostData, settings: dict[str, _Setting]) -> tuple[Endpoint, str | None]:
        raw: dict[str, Any] = {"address": host.name}
        for key, given in settings.items():
            field = _FIELD_OF.get(key)
            if field is not None:
                # A vault-decrypted connection setting (a user name, say) is needed in the clear here.
                raw[field] = _opened(given.value)
        if raw.get("transport") is not None:
            raw["transport"] = _normalise_transport(raw["transport"])
        try:
            cs = ConnectionSettings.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            setting = next((k for k, f in _FIELD_OF.items() if f == field), field)
            bad = settings.get(setting)
            message = err["msg"]
            if err["type"] == "literal_error" and bad is not None and not is_secret_name(bad.source):
                message += f" (got {bad.value!r})"
            raise _err(f"host {host.name!r}: {message}", bad.origin if bad else host.origin,
                       bad.source if bad else field) from None
        scheme = cs.scheme or ("http" if cs.port == WINRM_HTTP_PORT else "https")
        timeouts = self._timeouts(host, cs, settings)
        password_setting = settings.get("password")
        try:
            password, source = resolve_password(
                host.name,
                cs.transport,
                cs.username,
                None if password_setting is None or password_setting.value is None else _text(password_setting.value),
                password_setting.source if password_setting else None,
                cs.password_env,
                cs.password_keyring,
                self.creds,
            )
        except InventoryError as exc:
            origin = host.origin
            raise InventoryError(
                exc.message, file=origin.file if origin else None, line=origin.line if origin else None,
                field=exc.field,
            ) from None
        endpoint = Endpoint(
            host=host.name,
            address=cs.address,
            port=cs.port,
            scheme=scheme,
            path=cs.path,
            transport=cs.transport,
            username=cs.username,
            password=password,
            cert_validation=cs.cert_validation,
            ca_trust_path=cs.ca_trust_path,
            message_encryption=cs.message_encryption,
            allow_unencrypted=cs.allow_unencrypted,
            timeouts=timeouts,
            service=cs.service,
            kerberos_hostname_override=cs.kerberos_hostname_override,
            kerberos_delegation=cs.kerberos_delegation,
        )
        return endpoint, source

    def _timeouts(self, host: HostData, cs: ConnectionSettings, settings: dict[str, _Setting]) -> Timeouts:
        base = Timeouts()
        operation = cs.operation if cs.operation is not None else base.operation
        read = cs.read
        if read is None:
            # pywinrm requires read > operation; keep the default gap when only operation is set.
            read = max(base.read, operation + (base.read - base.operation))
        elif read <= operation:
            s = settings.get("timeouts.read")
            raise _err(
                f"host {host.name!r}: read timeout ({read:g} s) must be longer than the operation timeout "
                f"({operation:g} s)", s.origin if s else None, s.source if s else "timeouts.read",
            )
        key = (cs.connect if cs.connect is not None else base.connect, operation, read,
               cs.command if cs.command is not None else base.command)
        timeouts = self._timeouts_cache.get(key)
        if timeouts is None:  # immutable, so hosts with the same limits share one object
            timeouts = self._timeouts_cache[key] = Timeouts(connect=key[0], operation=key[1], read=key[2], command=key[3])
        return timeouts

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


def _normalise_transport(value: Any) -> Any:
    """Ansible allows a list or a comma-separated string; kbfix uses the first entry."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, str):
        value = value.split(",")[0].strip().lower()
        return _TRANSPORT_ALIASES.get(value, value)
    return value


def _opened(value: Any) -> Any:
    """`value` with Secrets (from a vault-encrypted vars file) opened, lists included."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, list):
        return [_opened(v) for v in value]
    return value


def _text(value: Any) -> str:
    """A setting's value as text; a Secret (vault-decrypted or rendered from one) is opened here
    only to be wrapped again by `resolve_password`."""
    return value.reveal() if isinstance(value, Secret) else str(value)


def _err(message: str, origin: Origin | None, field: str | None) -> InventoryError:
    return InventoryError(
        message, file=origin.file if origin else None, line=origin.line if origin else None, field=field
    )
