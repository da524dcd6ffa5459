"""Presentations of an `Inventory` for people and scripts: graph, JSON, check rows.

Pure functions (inventory in, text or plain data out) used by `kbfix inventory …`. Secrets are
rendered as `***` everywhere: `Secret` values in vars become the string `"***"` and a password
is shown only by where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inventory.model import Host, Inventory
from remoting.endpoint import Secret

REDACTED = "***"


def plain(value: Any) -> Any:
    """A JSON-ready copy of a variable value with every Secret replaced by `***`."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def graph(inv: Inventory, group: str = "all") -> list[str]:
    """Lines like `ansible-inventory --graph` (ansible-core cli/inventory.py `_graph_group`)."""

    def name(text: str, depth: int) -> str:
        return "  |" * depth + "--" + text if depth else text

    def walk(gname: str, depth: int) -> list[str]:
        g = inv.groups[gname]
        out = [name(f"@{gname}:", depth)]
        for child in g.children:
            out.extend(walk(child, depth + 1))
        if gname != "all":
            out.extend(name(h, depth + 1) for h in g.hosts)
        return out

    return walk(group, 0)


def endpoint_dict(host: Host) -> dict[str, Any] | None:
    """The host's connection settings as plain data, password shown as `***` (or None)."""
    ep = host.endpoint
    if ep is None:
        return None
    return {
        "url": ep.url,
        "address": ep.address,
        "port": ep.effective_port,
        "scheme": ep.scheme,
        "path": ep.path,
        "transport": ep.transport,
        "username": ep.username,
        "password": REDACTED if ep.password is not None else None,
        "password_source": host.password_source,
        "cert_validation": ep.cert_validation,
        "ca_trust_path": ep.ca_trust_path,
        "message_encryption": ep.message_encryption,
        "allow_unencrypted": ep.allow_unencrypted,
        "timeouts": {
            "connect": ep.timeouts.connect,
            "operation": ep.timeouts.operation,
            "read": ep.timeouts.read,
            "command": ep.timeouts.command,
        },
    }


def host_dict(host: Host) -> dict[str, Any]:
    """One host as plain data (the `inventory list --format json` element)."""
    return {
        "name": host.name,
        "groups": list(host.groups),
        "roles": list(host.roles),
        "site": host.site,
        "skipped_reason": host.skipped_reason,
        "endpoint": endpoint_dict(host),
        "vars": plain(host.vars),
    }


def inventory_document(inv: Inventory, hosts: list[Host]) -> dict[str, Any]:
    """`inventory list --format json`: sources, digest and the selected hosts."""
    return {
        "sources": [str(p) for p in inv.sources],
        "digest": inv.digest,
        "hosts": [host_dict(h) for h in hosts],
    }


def check_lines(host: Host) -> list[str]:
    """Human-readable effective settings of one host (for `inventory check`)."""
    roles = ", ".join(host.roles) if host.roles else "(none declared: discovered from the registry)"
    lines = [f"{host.name}"]
    if host.endpoint is None:
        lines.append(f"  skipped: {host.skipped_reason}")
    else:
        ep = endpoint_dict(host)
        assert ep is not None
        t = ep["timeouts"]
        password = f"{REDACTED} ({host.password_source})" if ep["password"] else (
            f"none ({host.password_source})" if host.password_source else "none (the run prompts on a terminal, or stops)"
        )
        lines += [
            f"  url: {ep['url']}",
            f"  transport: {ep['transport']}   message_encryption: {ep['message_encryption']}"
            f"   allow_unencrypted: {str(ep['allow_unencrypted']).lower()}",
            f"  cert_validation: {ep['cert_validation']}" + (f"   ca_trust_path: {ep['ca_trust_path']}" if ep["ca_trust_path"] else ""),
            f"  username: {ep['username'] or '(none)'}   password: {password}",
            f"  timeouts (s): connect {t['connect']:g}, operation {t['operation']:g}, read {t['read']:g}, command {t['command']:g}",
        ]
        if ep["transport"] == "kerberos" and host.endpoint is not None:
            e = host.endpoint
            lines.append(f"  kerberos: spn {e.service}/{e.kerberos_hostname_override or e.address}"
                         f"   delegation: {str(e.kerberos_delegation).lower()}"
                         + ("" if e.password is not None else "   ticket: from the credential cache (kinit)"))
    lines += [
        f"  site: {host.site or '(none)'}",
        f"  roles: {roles}",
        f"  groups: {', '.join(host.groups) or '(none)'}",
    ]
    return lines
