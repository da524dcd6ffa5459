"""The agent's op table: every op the remote agent knows, and whether it changes the host.

This is the one place that says which ops are mutating. Check mode is enforced against it in
`remoting.session` (before anything is sent) and the lab counts mutating ops with it.
The argument and result shapes are documented in `remoting/PROTOCOL.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class OpSpec:
    """One op: its wire name, whether it mutates host state, required and optional args."""

    name: str
    mutating: bool
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


_SPECS = (
    OpSpec("env.expand", False, ("text",)),
    OpSpec("registry.values", False, ("key",), ("view", "name", "subkeys")),
    OpSpec("file.info", False, ("path",), ("sha256",)),
    OpSpec(
        "log.scan",
        False,
        ("path", "pattern"),
        ("max_matches", "context", "start_offset", "tail_bytes", "rotated", "max_line_chars"),
    ),
    OpSpec("products.list", False, (), ("pattern",)),
    OpSpec("products.patches", False, (), ("pattern",)),
    OpSpec("service.status", False, ("name",)),
    OpSpec("wsus.find_update", False, ("title",)),
    OpSpec("system.reboot_state", False),  # reboot (issue 21): pending indicators + last boot time
    OpSpec("file.upload", True, ("path", "data"), ("offset",)),
    OpSpec(
        "installer.run",
        True,
        ("path", "sha256"),
        ("arg", "success_codes", "reboot_codes", "log_path", "timeout"),
    ),
    OpSpec("service.restart", True, ("name",)),
    OpSpec("wsus.decline_update", True, ("id",)),
    OpSpec("wsus.approve_update", True, ("id",), ("action", "group")),
    OpSpec("wsus.workaround", True, ("id",), ("group",)),
    OpSpec("system.reboot", True, (), ("delay", "message")),  # reboot (issue 21): shutdown.exe /r
)

OPS: MappingProxyType[str, OpSpec] = MappingProxyType({s.name: s for s in _SPECS})


def is_mutating(op_name: str) -> bool:
    """True when `op_name` changes host state. Raises KeyError for an unknown op."""
    return OPS[op_name].mutating
