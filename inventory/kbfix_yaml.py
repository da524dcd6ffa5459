"""The kbfix YAML inventory format (`kbfix_inventory: 1`): pydantic models and loading.

Shape (see docs in inventory/README.md)::

    kbfix_inventory: 1
    defaults: {scheme, transport, cert_validation, ca_trust_path, allow_unencrypted,
               message_encryption, path, username, password | password_env | password_keyring,
               service, kerberos_hostname_override, kerberos_delegation,
               timeouts: {connect, operation, read, command}, vars: {}}
    groups:  {NAME: {vars: {}, roles: [], hosts: [NAME or range, each defined under hosts:],
                     children: [GROUP]}}
    hosts:   {NAME or range: {address, port, site, roles: [], vars: {}, + any defaults key}}

Models forbid unknown keys; validation errors become InventoryError with the file, the line
(from `yamlmarks`) and the dotted field, plus a did-you-mean for misspelt keys. Connection
settings go to `Settings` layers (defaults, per host), variables into the Ansible-style model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from inventory.data import InventoryData, Origin, Settings
from inventory.errors import InventoryError, did_you_mean
from inventory.ranges import RangeError, expand_hostname_range
from inventory.roles import known_roles
from inventory.yamlmarks import MarkedDict, MarkedList
from remoting.endpoint import Secret

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TimeoutsModel(_Strict):
    """Seconds; see remoting.endpoint.Timeouts."""

    connect: Seconds | None = None
    operation: Seconds | None = None
    read: Seconds | None = None
    command: Seconds | None = None

    @field_validator("read")
    @classmethod
    def _read_after_operation(cls, read: float | None, info: ValidationInfo) -> float | None:
        # pywinrm refuses read_timeout_sec <= operation_timeout_sec (winrm/protocol.py).
        operation = info.data.get("operation")
        if read is not None and operation is not None and read <= operation:
            raise ValueError(f"read timeout ({read:g} s) must be longer than the operation timeout ({operation:g} s)")
        return read


class ConnectionModel(_Strict):
    """Connection settings allowed in `defaults` and on each host."""

    scheme: Literal["https", "http"] | None = None
    transport: Literal["ntlm", "kerberos", "basic", "credssp", "certificate"] | None = None
    cert_validation: Literal["validate", "ignore"] | None = None
    ca_trust_path: str | None = None
    allow_unencrypted: bool | None = None
    message_encryption: Literal["auto", "always", "never"] | None = None
    path: str | None = None
    username: str | None = None
    password: InstanceOf[Secret] | str | None = None  # a Secret when it was a `!vault` value
    password_env: str | None = None
    password_keyring: str | None = None
    timeouts: TimeoutsModel | None = None
    # Kerberos, named as pywinrm names them: SPN service class, SPN host part, TGT forwarding.
    service: str | None = None
    kerberos_hostname_override: str | None = None
    kerberos_delegation: bool | None = None


class DefaultsModel(ConnectionModel):
    """`defaults:` — settings and variables for every host."""

    vars: dict[str, Any] = Field(default_factory=dict)


class GroupModel(_Strict):
    """One entry of `groups:`."""

    vars: dict[str, Any] = Field(default_factory=dict)
    roles: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)


class HostModel(ConnectionModel):
    """One entry of `hosts:`."""

    address: str | None = None
    port: Port | None = None
    site: str | None = None
    roles: list[str] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)


class KbfixInventoryModel(_Strict):
    """A whole kbfix YAML inventory file."""

    kbfix_inventory: Literal[1]
    defaults: DefaultsModel = Field(default_factory=DefaultsModel)
    groups: dict[str, GroupModel | None] = Field(default_factory=dict)
    hosts: dict[str, HostModel | None] = Field(default_factory=dict)


_CONNECTION_KEYS = tuple(ConnectionModel.model_fields)
_KEYS_BY_CONTEXT: dict[str, tuple[str, ...]] = {
    "top": tuple(KbfixInventoryModel.model_fields),
    "defaults": tuple(DefaultsModel.model_fields),
    "group": tuple(GroupModel.model_fields),
    "host": tuple(HostModel.model_fields),
    "timeouts": tuple(TimeoutsModel.model_fields),
}


def _context(loc: tuple[Any, ...]) -> str:
    if len(loc) <= 1:
        return "top"
    if loc[-2] == "timeouts":
        return "timeouts"
    if loc[0] == "defaults":
        return "defaults"
    if loc[0] == "groups":
        return "group"
    return "host"


def _key_line(data: Any, key: Any) -> int | None:
    """The line of `key` in a marked mapping (None when `data` is not one)."""
    return data.key_lines.get(key) if isinstance(data, MarkedDict) else None


def _line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest node along `loc` that the marked tree knows."""
    line = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, MarkedDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, MarkedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


def _validation_error(exc: ValidationError, data: Any, path: Path) -> InventoryError:
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = tuple(p for p in err["loc"] if p not in ("GroupModel", "HostModel"))
    field = ".".join(str(p) for p in loc) or None
    line = _line_of(data, loc)
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}" + did_you_mean(key, _KEYS_BY_CONTEXT[_context(loc)])
    elif err["type"] == "missing" and loc == ("kbfix_inventory",):
        message = "missing `kbfix_inventory: 1`"
    else:
        message = err["msg"]
    return InventoryError(message + more, file=path, line=line, field=field)


def is_kbfix_document(data: Any) -> bool:
    """True when a parsed YAML document is a kbfix inventory (has the `kbfix_inventory` key)."""
    return isinstance(data, dict) and "kbfix_inventory" in data


def _settings_from(model: ConnectionModel, raw: Any, path: Path) -> Settings:
    """Connection settings set in `model`; `raw` is the marked mapping it was validated from."""
    settings = Settings()
    fallback = getattr(raw, "line", None)
    for key in model.model_fields_set.intersection(_CONNECTION_KEYS):  # only what the file set
        value = getattr(model, key)
        if value is None:
            continue
        if key == "timeouts":
            for tkey, tvalue in value.model_dump(exclude_none=True).items():
                settings.values[f"timeouts.{tkey}"] = tvalue
                settings.origins[f"timeouts.{tkey}"] = Origin(path, _line_of(raw, (key, tkey)) or fallback)
            continue
        settings.values[key] = value
        settings.origins[key] = Origin(path, _key_line(raw, key) or fallback)
    return settings


def _check_roles(roles: list[str], raw: Any, prefix: tuple[Any, ...], path: Path) -> None:
    known = known_roles()
    for i, role in enumerate(roles):
        if role not in known:
            raise InventoryError(
                f"unknown role {role!r}; known roles are {', '.join(known)}" + did_you_mean(role, known),
                file=path, line=_line_of(raw, (*prefix, i)), field=".".join(str(p) for p in (*prefix, i)),
            )


def _expand(pattern: str, raw: Any, loc: tuple[Any, ...], path: Path) -> list[str]:
    if "[" not in pattern:  # the common case: one plain name
        return [pattern]
    try:
        return expand_hostname_range(pattern)
    except RangeError as exc:
        raise InventoryError(str(exc), file=path, line=_line_of(raw, loc), field=".".join(map(str, loc))) from None


def parse_kbfix(data: Any, path: Path, inv: InventoryData) -> None:
    """Validate a kbfix YAML document and add its hosts, groups, vars and settings to `inv`."""
    try:
        model = KbfixInventoryModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, data, path) from None

    raw_defaults = data.get("defaults") if isinstance(data, dict) else None
    defaults = _settings_from(model.defaults, raw_defaults, path)
    inv.defaults.values.update(defaults.values)
    inv.defaults.origins.update(defaults.origins)
    for key, value in model.defaults.vars.items():
        inv.set_group_var("all", key, value, Origin(path, _line_of(data, ("defaults", "vars", key))))

    defined_here: dict[str, str] = {}
    raw_hosts = data.get("hosts") or {}
    for pattern, host_model in model.hosts.items():
        host_model = host_model or HostModel()
        raw_host = raw_hosts.get(pattern)
        _check_roles(host_model.roles, data, ("hosts", pattern, "roles"), path)
        line = _key_line(raw_hosts, pattern)
        names = _expand(pattern, data, ("hosts", pattern), path)
        settings = _settings_from(host_model, raw_host, path)
        for key in ("address", "port", "site"):
            value = getattr(host_model, key)
            if value is not None:
                settings.values[key] = value
                settings.origins[key] = Origin(path, _key_line(raw_host, key) or line)
        raw_vars = raw_host.get("vars") if isinstance(raw_host, dict) else None
        var_origins = {key: Origin(path, _key_line(raw_vars, key) or line) for key in host_model.vars}
        for name in names:
            if name in defined_here or name in inv.hosts:
                first = defined_here.get(name, "an earlier source")
                raise InventoryError(
                    f"host {name!r} is defined twice (also by {first!r})", file=path, line=line,
                    field=f"hosts.{pattern}",
                )
            defined_here[name] = pattern
            host = inv.add_host(name, None, None, Origin(path, line))
            host.kbfix = True
            host.settings = settings
            host.roles = list(host_model.roles)
            host.vars.update(host_model.vars)
            host.var_origins.update(var_origins)

    for gname, group_model in model.groups.items():
        group_model = group_model or GroupModel()
        _check_roles(group_model.roles, data, ("groups", gname, "roles"), path)
        group = inv.add_group(gname, Origin(path, _line_of(data, ("groups", gname))))
        group.roles = list(group_model.roles)
        for key, value in group_model.vars.items():
            inv.set_group_var(gname, key, value, Origin(path, _line_of(data, ("groups", gname, "vars", key))))
        for i, pattern in enumerate(group_model.hosts):
            line = _line_of(data, ("groups", gname, "hosts", i))
            for name in _expand(pattern, data, ("groups", gname, "hosts", i), path):
                if name not in defined_here:
                    # A typo here would otherwise become a new host named after the typo.
                    raise InventoryError(
                        f"host {name!r} is not defined under hosts:" + did_you_mean(name, list(defined_here)),
                        file=path, line=line, field=f"groups.{gname}.hosts.{i}",
                    )
                inv.add_host(name, gname, None, Origin(path, line))

    for gname, group_model in model.groups.items():
        for i, child in enumerate((group_model or GroupModel()).children):
            line = _line_of(data, ("groups", gname, "children", i))
            if child not in inv.groups:
                raise InventoryError(
                    f"child group {child!r} is not defined under groups" + did_you_mean(child, list(model.groups)),
                    file=path, line=line, field=f"groups.{gname}.children.{i}",
                )
            inv.add_child(gname, child, Origin(path, line))
