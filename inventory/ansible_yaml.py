"""Ansible YAML inventories, read the way Ansible's `yaml` inventory plugin reads them.

Follows ansible-core `ansible/plugins/inventory/yaml.py::InventoryModule._parse_group`: top-level
keys are groups; a group is a mapping (or empty) with `hosts`, `vars` and `children`; a string
in place of one of those is shorthand for a one-key mapping; children are groups parsed the same
way, recursively; host keys are host patterns (ranges, `:port`) whose value is the host's vars.

Where Ansible only warns and skips (an unknown key in a group, a group that is not a mapping),
kbfix stops with an InventoryError naming the line, with a did-you-mean for the key: a skipped
`host:` typo silently drops servers from a compliance run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventory.data import InventoryData, Origin
from inventory.errors import InventoryError, did_you_mean
from inventory.ranges import RangeError, expand_host_pattern
from inventory.yamlmarks import MarkedDict, kind

_SECTIONS = ("vars", "children", "hosts")


def _line(container: Any, key: Any) -> int | None:
    if isinstance(container, MarkedDict):
        return container.key_lines.get(key, container.line)
    return None


def parse_ansible_yaml(data: Any, path: Path, inv: InventoryData) -> None:
    """Read a parsed Ansible YAML inventory (`data`, from `yamlmarks`) into `inv`."""
    if not data:
        raise InventoryError("empty YAML inventory", file=path, line=1)
    if not isinstance(data, dict):
        raise InventoryError(
            f"a YAML inventory must be a mapping of groups, not a {kind(data)}", file=path,
            line=getattr(data, "line", 1),
        )
    if data.get("plugin"):
        raise InventoryError(
            "this is an Ansible inventory plugin configuration, which kbfix cannot run; "
            "export it with `ansible-inventory -i FILE --list -y` and use that file",
            file=path, line=_line(data, "plugin"), field="plugin",
        )
    for name, group_data in data.items():
        _parse_group(name, group_data, path, inv, _line(data, name), str(name))


def _parse_group(name: Any, group_data: Any, path: Path, inv: InventoryData, line: int | None, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise InventoryError("a group name must be a non-empty string", file=path, line=line, field=where)
    if group_data is not None and not isinstance(group_data, dict):
        raise InventoryError(
            f"group {name!r} must be a mapping with hosts/vars/children, not a {kind(group_data)}",
            file=path, line=line, field=where,
        )
    inv.add_group(name, Origin(path, line))
    if not group_data:
        return name
    for key, value in group_data.items():
        key_line = _line(group_data, key)
        field = f"{where}.{key}"
        if key not in _SECTIONS:
            raise InventoryError(
                f"unexpected key {key!r} in group {name!r}; only hosts, vars and children are valid"
                + did_you_mean(str(key), _SECTIONS),
                file=path, line=key_line, field=field,
            )
        if isinstance(value, str):
            value = {value: None}
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InventoryError(
                f"{key!r} of group {name!r} must be a mapping, not a {kind(value)}",
                file=path, line=key_line, field=field,
            )
        if key == "vars":
            for var, var_value in value.items():
                _check_var_name(var, path, _line(value, var), f"{field}.{var}")
                inv.set_group_var(name, var, var_value, Origin(path, _line(value, var)))
        elif key == "children":
            for sub, sub_data in value.items():
                sub_line = _line(value, sub)
                child = _parse_group(sub, sub_data, path, inv, sub_line, f"{field}.{sub}")
                inv.add_child(name, child, Origin(path, sub_line))
        else:
            for pattern, host_vars in value.items():
                _parse_host(name, pattern, host_vars, path, inv, _line(value, pattern), f"{field}.{pattern}")
    return name


def _parse_host(
    group: str, pattern: Any, host_vars: Any, path: Path, inv: InventoryData, line: int | None, field: str
) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise InventoryError(
            "a host name must be a string; quote numbers and IP addresses", file=path, line=line, field=field
        )
    if host_vars is not None and not isinstance(host_vars, dict):
        raise InventoryError(
            f"host {pattern!r} must map to its variables (a mapping), not a {kind(host_vars)}",
            file=path, line=line, field=field,
        )
    try:
        names, port = expand_host_pattern(pattern)
    except RangeError as exc:
        raise InventoryError(str(exc), file=path, line=line, field=field) from None
    for host in names:
        inv.add_host(host, group, port, Origin(path, line))
        for var, value in (host_vars or {}).items():
            _check_var_name(var, path, _line(host_vars, var), f"{field}.{var}")
            inv.set_host_var(host, var, value, Origin(path, _line(host_vars, var)))


def _check_var_name(var: Any, path: Path, line: int | None, field: str) -> None:
    if not isinstance(var, str) or not var:
        raise InventoryError("a variable name must be a non-empty string", file=path, line=line, field=field)
