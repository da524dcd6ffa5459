"""Pending-reboot facts: the agent's `system.reboot_state` op in every gather, read into a value,
and the `pending_reboot` verdict it gives a host (pure, no I/O).

Windows' documented indicators (remoting/PROTOCOL.md, `system.reboot_state`; winlab/power.py
cites the sources): the Component Based Servicing `RebootPending` key (Vista/Server 2008 and
later), the Windows Update `Auto Update\\RebootRequired` key, and Session Manager's
`PendingFileRenameOperations` value (renames registered with MoveFileEx
MOVEFILE_DELAY_UNTIL_REBOOT, done at the next boot). Plus `Win32_OperatingSystem.LastBootUpTime`,
which tells a restart happened (it changes; Ansible's win_reboot compares it the same way).

A host with an indicator set is `pending_reboot` for every advisory that is otherwise fixed
(`compliant`/`remediated`): the fix may only take effect at the restart (files in use are
replaced then). A `non_compliant` finding stays `non_compliant` (it needs its remedy) and carries
the indicator as evidence too. `not_applicable` findings are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from playbooks.model import Evidence, Finding, Status
from remoting.agent_protocol import OpRequest, op

#: The id of the journalled restart action (its ExecutedAction is added to the findings it settles).
REBOOT_ACTION_ID = "reboot"
#: The op id of the reboot-state read in every gather request (and its key in HostResult.facts).
REBOOT_STATE_ID = "reboot_state"

_INDICATOR_TEXT = {
    "cbs_reboot_pending": r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending exists",
    "wu_reboot_required": r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired exists",
    "pending_file_renames": r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\PendingFileRenameOperations is set",
}


class RebootState(BaseModel):
    """What `system.reboot_state` read: which indicators are set (names of `_INDICATOR_TEXT`),
    the first PendingFileRenameOperations strings and their count, the last boot time (UTC,
    None when WMI did not answer) and any read error."""

    indicators: list[str] = Field(default_factory=list)
    pending_file_renames: list[str] = Field(default_factory=list)
    pending_file_renames_count: int = 0
    last_boot: datetime | None = None
    error: str | None = None

    @property
    def pending(self) -> bool:
        """True when Windows says a restart is pending."""
        return bool(self.indicators)

    def describe(self) -> str:
        """The indicators in words, e.g. `...\\PendingFileRenameOperations is set (2 strings)`."""
        parts = []
        for name in self.indicators:
            text = _INDICATOR_TEXT.get(name, name)
            if name == "pending_file_renames":
                text += f" ({self.pending_file_renames_count} strings)"
            parts.append(text)
        return "; ".join(parts)


def reboot_state_op() -> OpRequest:
    """The read op appended to every gather request (one round trip with every other fact)."""
    return op(REBOOT_STATE_ID, "system.reboot_state")


def parse_reboot_state(data: Mapping[str, Any] | None, error: str | None = None) -> RebootState:
    """A RebootState from the op's data (PROTOCOL.md shape); `error` when the op failed.
    Unknown or malformed fields read as "not set" (never raises)."""
    if data is None:
        return RebootState(error=error or "no answer")
    indicators = [k for k in ("cbs_reboot_pending", "wu_reboot_required") if data.get(k) is True]
    raw_renames = data.get("pending_file_renames")
    renames = [s for s in raw_renames if isinstance(s, str)] if isinstance(raw_renames, list) else []
    count = data.get("pending_file_renames_count")
    count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else len(renames)
    if count > 0:
        indicators.append("pending_file_renames")
    boot: datetime | None = None
    raw = data.get("last_boot")
    if isinstance(raw, str):
        try:
            boot = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            boot = None
    return RebootState(indicators=indicators, pending_file_renames=renames[:64], pending_file_renames_count=count,
                       last_boot=boot, error=data.get("last_boot_error") if isinstance(data.get("last_boot_error"), str) else None)


def reboot_state_from_response(response: Any) -> RebootState | None:
    """The RebootState of an AgentResponse whose request included `reboot_state_op()`; None
    when the request did not ask for it."""
    for r in getattr(response, "results", ()):
        if r.id == REBOOT_STATE_ID:
            if not r.ok:
                e = r.error
                return parse_reboot_state(None, f"{e.kind}: {e.message}" if e else "error")
            return parse_reboot_state(r.data)
    return None


def reboot_evidence(state: RebootState, at: datetime) -> Evidence:
    """The indicator as evidence (probe `system.reboot_state`)."""
    value = state.describe() or "no pending-reboot indicator"
    note = f"last boot {state.last_boot.isoformat()}" if state.last_boot else None
    if state.pending_file_renames:
        shown = ", ".join(state.pending_file_renames[:6])
        note = ((note + "; ") if note else "") + f"renames: {shown}"
    return Evidence(probe="system.reboot_state", value=value, rule="reboot:pending-indicator", note=note, observed_at=at)


def apply_pending_reboot(findings: Sequence[Finding], state: RebootState | None, at: datetime) -> list[Finding]:
    """Pure: findings with the pending-reboot verdict applied (see module docstring). Returns
    the findings unchanged when `state` is None or nothing is pending."""
    if state is None or not state.pending:
        return list(findings)
    ev = reboot_evidence(state, at)
    out = []
    for f in findings:
        if f.status in (Status.COMPLIANT, Status.REMEDIATED):
            out.append(f.model_copy(update={
                "status": Status.PENDING_REBOOT,
                "reason": f"{f.reason} Windows reports a restart pending ({state.describe()}): the change takes effect at the restart.",
                "evidence": [*f.evidence, ev]}))
        elif f.status in (Status.NON_COMPLIANT, Status.MITIGATED, Status.UNKNOWN):
            out.append(f.model_copy(update={"evidence": [*f.evidence, ev]}))
        else:
            out.append(f)
    return out
