"""The values that cross module boundaries: statuses, evidence, findings, actions, host results.

Playbooks produce them, `kbfix` stores them in the audit store and the reports render them.
They are pydantic models so they round-trip through JSON unchanged (`model_dump(mode="json")`,
`model_validate`). Statuses follow DESIGN.md, plus `mitigated` (workaround in place) and
`unknown` (a mutating request whose answer was lost, before re-reading the host).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Status(str, Enum):
    """Per host and advisory status. `rank` orders them: a host's overall status is the worst."""

    NOT_APPLICABLE = "not_applicable"
    COMPLIANT = "compliant"
    REMEDIATED = "remediated"
    MITIGATED = "mitigated"
    SKIPPED = "skipped"
    PENDING_REBOOT = "pending_reboot"
    NON_COMPLIANT = "non_compliant"
    UNKNOWN = "unknown"
    FAILED = "failed"
    UNREACHABLE = "unreachable"

    @property
    def rank(self) -> int:
        """0 (best) … 9 (worst)."""
        return _RANK[self]

    @property
    def is_failure(self) -> bool:
        """True for statuses counted as failures (never not_applicable or skipped)."""
        return self in (Status.NON_COMPLIANT, Status.FAILED, Status.UNREACHABLE, Status.UNKNOWN)


_RANK = {s: i for i, s in enumerate(Status)}


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    """The worst status of a list; `not_applicable` for an empty one."""
    return max(statuses, key=lambda s: s.rank, default=Status.NOT_APPLICABLE)


class LogLine(BaseModel):
    """One matched log line, verbatim: file path, byte offset of the line start, the text,
    its parsed timestamp (UTC) when the format has one, and context lines."""

    file: str
    offset: int
    text: str
    timestamp: datetime | None = None
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    cut: bool = False


class Evidence(BaseModel):
    """What was observed, by which probe, and which rule used it.

    probe: the agent op and target (e.g. `file.info C:\\…\\Client.dll`); value: the value
    read (a version, a registry value) or None; lines: matched log lines; rule: the rule id
    from the playbook YAML that decided; observed_at: UTC time of the gather.
    """

    probe: str
    value: str | None = None
    lines: list[LogLine] = Field(default_factory=list)
    rule: str | None = None
    note: str | None = None
    observed_at: datetime = Field(default_factory=utcnow)


class PackageRef(BaseModel):
    """An operator-supplied update package: KB, file name, SHA-256 (hex), size in bytes."""

    kb: str
    file: str
    sha256: str
    size: int | None = None
    source: str | None = None


class PlannedAction(BaseModel):
    """One remote action the plan will take on one host.

    kind: `install_package`, `wsus_decline`, `wsus_approve`, `service_restart`, …;
    ops: the exact agent ops (name + text args) in order; expected_exit_codes for installers;
    estimated_seconds for window planning; facts_basis: the fact values the action was planned
    on (drift is a mismatch at apply time).
    """

    id: str
    advisory: str
    kind: str
    description: str
    ops: list[dict[str, Any]] = Field(default_factory=list)
    package: PackageRef | None = None
    expected_exit_codes: list[int] = Field(default_factory=list)
    estimated_seconds: float = 0.0
    reversible: bool = True
    note: str | None = None


class ExecutedAction(BaseModel):
    """What happened when a planned action ran: outcome `success`, `reboot_required`,
    `failed` or `unknown`, the exit code, times (UTC) and a bounded installer log tail."""

    action_id: str
    outcome: str
    exit_code: int | None = None
    started: datetime
    ended: datetime | None = None
    detail: str | None = None
    log_tail: str | None = None


class Finding(BaseModel):
    """The verdict of one advisory on one host, with its evidence and remedy."""

    advisory: str
    status: Status
    reason: str
    variant: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    remedy: str | None = None
    planned: list[PlannedAction] = Field(default_factory=list)
    executed: list[ExecutedAction] = Field(default_factory=list)
    verification: list[Evidence] = Field(default_factory=list)
    skip_reason: str | None = None
    notes: list[str] = Field(default_factory=list)  # added by playbooks: plan/verify remarks (e.g. package missing)
    linked_host: str | None = None  # added by playbooks: a client's WSUS server when it is in the run


class HostError(BaseModel):
    """Why a host could not be assessed: kind (`unreachable`, `auth`, `certificate`, `quota`,
    `timeout`, `agent`, `unknown`, `config`), message, WS-Man fault code / HRESULT."""

    kind: str
    message: str
    hresult: str | None = None


class HostResult(BaseModel):
    """One host's result for a run: identity, discovered roles, findings and overall status."""

    host: str
    address: str | None = None
    site: str | None = None
    roles: list[str] = Field(default_factory=list)
    os: dict[str, Any] = Field(default_factory=dict)
    status: Status
    findings: list[Finding] = Field(default_factory=list)
    error: HostError | None = None
    facts_digest: str | None = None
    started: datetime = Field(default_factory=utcnow)
    ended: datetime | None = None

    @classmethod
    def from_findings(cls, host: str, findings: list[Finding], **kw: Any) -> HostResult:
        """Build a result whose status is the worst of its findings."""
        return cls(host=host, findings=findings, status=worst([f.status for f in findings]), **kw)
