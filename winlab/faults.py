"""Faults a lab host can inject, as read from the fixture's `faults:` mapping.

The WS-Man server applies the network/auth/HTTP ones; the agent emulator applies the process ones.
All times are milliseconds in the fixture and seconds here where the name says `_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Faults:
    """Injected behaviour for one host.

    connect: `refused` closes the listener (connection refused), `hang` accepts and never answers;
    auth: `reject` answers 401 to any credentials; latency_ms: added to every HTTP response;
    http_500_every: every Nth request gets HTTP 500 (0 = never); http_500_burst: the first N requests get 500;
    receive_timeout: every Receive answers the w:TimedOut fault after the OperationTimeout;
    quota: Create answers the MaxShellsPerUser quota fault; drop_after_mutation: the connection is
    closed without an answer when a Command's stdin carried a mutating op (after running it);
    drop_mid_receive: the connection is closed during the first Receive;
    ps_start_ms: simulated powershell.exe start time; hang_command: the agent never finishes.
    Hostile hosts (issue 20): stderr_flood: every Receive answers a full envelope of stderr and the
    command never reports Done; type_confused: the agent's answer is well framed but every value
    has the wrong JSON type (strings as lists, numbers as strings, objects as lists);
    escape_names: the computer name, OS caption and culture carry terminal escape sequences.
    """

    connect: Literal["ok", "refused", "hang"] = "ok"
    auth: Literal["ok", "reject"] = "ok"
    latency_ms: float = 0.0
    http_500_every: int = 0
    http_500_burst: int = 0
    receive_timeout: bool = False
    quota: bool = False
    drop_after_mutation: bool = False
    drop_mid_receive: bool = False
    ps_start_ms: float = 0.0
    hang_command: bool = False
    stderr_flood: bool = False
    type_confused: bool = False
    escape_names: bool = False
