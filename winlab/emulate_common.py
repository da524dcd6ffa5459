"""What every emulated agent op shares: its context, its failure type and its path arguments.

Path arguments follow remoting/PROTOCOL.md: `${reg:ID:NAME}` references first (the string value
NAME read by the earlier `registry.values` op ID, view 64 first), then `%VAR%` expansion with
the host's environment. The agent (`remoting/agent.ps1`) does the same.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from remoting.agent_protocol import OpError, OpRequest
from winlab.hoststate import HostState
from winlab.installers import InstallerBehaviour
from winlab.power import PowerState
from winlab.records import HostRecords

REF_RE = re.compile(r"\$\{reg:([A-Za-z0-9_.-]{1,64}):([^}]*)\}")


class OpFailure(Exception):
    """Raised inside an op handler: the op answers `error` and the request goes on."""

    def __init__(self, kind: str, message: str, hresult: str | None = None) -> None:
        super().__init__(message)
        self.error = OpError(kind, message, hresult)


@dataclass
class AgentContext:
    """What one agent run sees: host state, its behaviour, shell environment, cancel event,
    the records to write to, and the results so far (for `${reg:…}` references)."""

    state: HostState
    installers: tuple[InstallerBehaviour, ...]
    records: HostRecords
    env: Mapping[str, str] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    time_scale: float = 1.0
    registry_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # log.scan ops already run in this request: (resolved path, scan arguments) → op id
    scans: dict[tuple[str, ...], str] = field(default_factory=dict)
    power: PowerState | None = None  # reboot (issue 21): boot time and restarts


def resolve_path(text: str, ctx: AgentContext) -> str:
    """Apply `${reg:ID:NAME}` references (view 64 first, then 32) then environment expansion.
    Raises OpFailure(not_found) for an unresolved reference."""

    def ref(m: re.Match[str]) -> str:
        data = ctx.registry_results.get(m.group(1))
        name = m.group(2).lower()
        for view in ("64", "32"):
            v = (data or {}).get("views", {}).get(view) or {}
            for vname, val in (v.get("values") or {}).items():
                if vname.lower() == name and val["type"] in ("REG_SZ", "REG_EXPAND_SZ"):
                    return str(val["value"])
        raise OpFailure("not_found", f"unresolved reference {m.group(0)}")

    return ctx.state.expand(REF_RE.sub(ref, text), ctx.env)


def int_arg(o: OpRequest, key: str, default: int, lo: int, hi: int) -> int:
    """The integer argument `key` (default when absent). Raises RequestFormatError when it is
    not decimal, OpFailure(invalid_args) outside [lo, hi]."""
    v = o.integer(key, default)
    if not lo <= v <= hi:
        raise OpFailure("invalid_args", f"argument {key!r} must be between {lo} and {hi}")
    return v


def iso_utc(dt: datetime) -> str:
    """ISO-8601 UTC with a `Z`, seconds precision (what the agent writes for mtime)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def path_arg(o: OpRequest, ctx: AgentContext, key: str = "path") -> str:
    """A path argument after references and expansion, spelled as the agent returns it (not
    normalised: `TargetDir` ends in `\\`, so `${reg:…}\\x` keeps a doubled separator; the host
    state's lookups normalise). Raises OpFailure: not_found (unresolved reference), invalid_args
    (not an absolute drive or UNC path)."""
    raw = o.text(key) or ""
    path = resolve_path(raw, ctx)
    if not re.match(r"^([A-Za-z]:\\|\\\\)", path.replace("/", "\\")):
        raise OpFailure("invalid_args", f"{key} must be an absolute Windows path: {path!r}")
    return path


def not_found_hresult() -> str:
    """HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND) as the protocol writes it."""
    return "0x80070002"  # ERROR_FILE_NOT_FOUND as HRESULT
