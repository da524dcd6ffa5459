"""The agent's reboot ops, emulated: `system.reboot_state` (read) and `system.reboot` (mutating).

`system.reboot_state` reads the documented pending-reboot indicators from the host's registry
state and the boot time from its power state (`winlab.power`, which cites the sources).
`system.reboot` is `shutdown.exe /r /t <delay> /c "<message>" /d p:2:17`: on Server 2003 `/t`
takes 0-600 seconds and `/c` at most 127 characters (shutdown.exe's own usage text, Server
2003; Server 2008 accepts longer), so the lab refuses what the oldest host would.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from remoting.agent_protocol import OpRequest
from winlab.emulate_common import AgentContext, OpFailure, int_arg, iso_utc
from winlab.power import reboot_indicators

#: shutdown.exe's exit code when a restart is already scheduled: ERROR_SHUTDOWN_IS_SCHEDULED (1190)
#: "A system shutdown has already been scheduled" (System Error Codes 1000-1299). The restart the
#: caller wants still happens, so the agent answers ok with this exit code.
SHUTDOWN_IS_SCHEDULED = 1190


def op_reboot_state(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """system.reboot_state: the three indicators and Win32_OperatingSystem.LastBootUpTime."""
    data: dict[str, Any] = dict(reboot_indicators(ctx.state))
    boot = ctx.power.boot_time if ctx.power is not None else None
    data["last_boot"] = iso_utc(boot) if boot is not None else None
    data["last_boot_error"] = None if boot is not None else "Win32_OperatingSystem not available in this lab host"
    return data


def op_reboot(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """system.reboot: schedule the restart (answers before the host goes down)."""
    delay = int_arg(o, "delay", 2, 0, 600)
    message = o.text("message") or "Reboot initiated by kbfix"
    if len(message) > 127 or re.search(r'["\x00-\x1f]', message):
        raise OpFailure("invalid_args", "message: at most 127 printable characters, no double quote")
    if ctx.power is None:
        raise OpFailure("exception", "this lab host cannot restart (no power state)")
    before = ctx.power.boot_time
    requested = datetime.now(timezone.utc)
    code = 0 if ctx.power.request_restart(float(delay)) else SHUTDOWN_IS_SCHEDULED
    ctx.records.mutated("system.reboot", f"delay={delay} exit={code}")
    return {"requested": iso_utc(requested), "delay": delay, "last_boot": iso_utc(before), "exit_code": code}
