"""Write a resolved `Inventory` back out as a kbfix YAML document (e.g. to convert an Ansible one).

Every host is written with its effective connection settings, site, declared roles and
effective variables (already merged, so group `vars:` are left empty); groups keep their direct
hosts and children. Secrets are never written: variables with secret-looking names and
passwords are left out, so the result needs `password_env`, `password_keyring` or
KBFIX_PASSWORD to supply them. Loading the result gives the same hosts, groups and variables.
"""

from __future__ import annotations

from typing import Any

from inventory.model import Host, Inventory
from inventory.render import plain
from inventory.resolve import is_secret_name
from remoting.endpoint import Secret, Timeouts

_DEFAULT_TIMEOUTS = Timeouts()


def _strip_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_secrets(v) for k, v in value.items()
                if not isinstance(v, Secret) and not (isinstance(k, str) and is_secret_name(k) and not isinstance(v, dict))}
    if isinstance(value, list):
        return [_strip_secrets(v) for v in value if not isinstance(v, Secret)]
    return value


def _host_entry(host: Host) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    ep = host.endpoint
    if ep is not None:
        entry["address"] = ep.address
        if ep.port is not None:
            entry["port"] = ep.port
        entry.update(scheme=ep.scheme, transport=ep.transport, path=ep.path)
        if ep.username is not None:
            entry["username"] = ep.username
        entry.update(cert_validation=ep.cert_validation, message_encryption=ep.message_encryption,
                     allow_unencrypted=ep.allow_unencrypted)
        if ep.ca_trust_path is not None:
            entry["ca_trust_path"] = ep.ca_trust_path
        entry["timeouts"] = {"connect": ep.timeouts.connect, "operation": ep.timeouts.operation,
                             "read": ep.timeouts.read, "command": ep.timeouts.command}
    if host.site is not None:
        entry["site"] = host.site
    if host.roles:
        entry["roles"] = list(host.roles)
    variables = _strip_secrets(plain_with_secrets(host.vars))
    if ep is None and "ansible_connection" not in variables:
        # An Ansible host without ansible_connection is an ssh host; a kbfix host would be WinRM.
        variables["ansible_connection"] = "ssh"
    if variables:
        entry["vars"] = variables
    return entry


def plain_with_secrets(value: Any) -> Any:
    """Like render.plain, but keeps Secret objects so that they can be dropped, not written as ***."""
    if isinstance(value, Secret):
        return value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): plain_with_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_with_secrets(v) for v in value]
    return plain(value)


def to_kbfix_document(inv: Inventory) -> dict[str, Any]:
    """A kbfix YAML document (plain data for yaml.safe_dump) describing `inv`, without secrets."""
    groups: dict[str, Any] = {}
    for name, g in inv.groups.items():
        if name in ("all", "ungrouped"):
            continue
        entry: dict[str, Any] = {}
        if g.hosts:
            entry["hosts"] = list(g.hosts)
        children = [c for c in g.children if c != "ungrouped"]
        if children:
            entry["children"] = children
        groups[name] = entry or None
    return {
        "kbfix_inventory": 1,
        "groups": groups,
        "hosts": {name: _host_entry(h) or None for name, h in inv.hosts.items()},
    }
