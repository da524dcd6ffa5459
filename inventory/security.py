"""Warnings about connection settings that weaken security, one line per kind of weakness.

Loading goes on (an operator may have reasons, e.g. a lab), but the weakening is said every
time the inventory is used, naming how many hosts and an example, never a credential.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from inventory.model import Host

_CHECKS: tuple[tuple[str, Callable[[Host], bool]], ...] = (
    (
        "certificate validation is off (cert_validation: ignore / ansible_winrm_server_cert_validation): "
        "anyone on the path can pose as the host and receive the credentials",
        lambda h: h.endpoint is not None and h.endpoint.scheme == "https" and h.endpoint.cert_validation == "ignore",
    ),
    (
        "allow_unencrypted is set for plain HTTP: with Basic authentication the password crosses the "
        "network in clear text",
        lambda h: h.endpoint is not None and h.endpoint.scheme == "http" and h.endpoint.allow_unencrypted
        and h.endpoint.transport == "basic",
    ),
    (
        "message_encryption is never over plain HTTP: NTLM/Kerberos then authenticate but do not seal, so "
        "every command, answer and uploaded package crosses the network readable and alterable "
        "(WinRM's AllowUnencrypted; pywinrm message_encryption)",
        lambda h: h.endpoint is not None and h.endpoint.scheme == "http" and h.endpoint.transport != "basic"
        and h.endpoint.message_encryption == "never",
    ),
)


def security_warnings(hosts: Mapping[str, Host]) -> tuple[str, ...]:
    """One warning per weakness present: `N host(s) (e.g. NAME): what and why`."""
    out = []
    for text, weak in _CHECKS:
        names = [name for name, h in hosts.items() if weak(h)]
        if names:
            out.append(f"{len(names)} host(s) (e.g. {names[0]}): {text}")
    return tuple(out)
