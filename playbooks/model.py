"""The values that cross module boundaries: statuses, evidence, findings, actions, host results.

Playbooks produce them, `kbfix` stores them in the audit store and the reports render them.
They are pydantic models so they round-trip through JSON unchanged (`model_dump(mode="json")`,
`model_validate`). Statuses follow DESIGN.md, plus `mitigated` (workaround in place) and
`unknown` (a mutating request whose answer was lost, before re-reading the host).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the one home of this helper: kbfix imports it)."""
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
        """True when kbfix could not do or learn what it should have: failed, unreachable or
        unknown. A non-compliant host is NOT a failure (see `needs_work`); max-fail counts these."""
        return self in (Status.FAILED, Status.UNREACHABLE, Status.UNKNOWN)

    @property
    def is_vulnerable(self) -> bool:
        """True when the host was read and is exposed: non_compliant."""
        return self is Status.NON_COMPLIANT

    @property
    def needs_work(self) -> bool:
        """True when an operator still has to act although kbfix did its job: non_compliant or
        pending_reboot (exit code 3)."""
        return self in (Status.NON_COMPLIANT, Status.PENDING_REBOOT)


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
    observed_at: datetime = Field(default_factory=utc_now)


class Vocabulary(str, Enum):
    """A closed vocabulary stored and shown as its value (`str()` and f-strings give the value)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class SkipReason(Vocabulary):
    """Why a run left a host (or one of its findings) alone. Every value but `disabled` means
    "this run left work undone" (exit code 3); `disabled` hosts are out of scope."""

    WINDOW = "window"  # the change window did not leave time for the planned work
    DRIFT = "drift"  # the facts changed since the plan was made
    MAX_FAIL = "max_fail"  # an earlier batch failed more than --max-fail-percent
    INTERRUPTED = "interrupted"  # a stop was requested (Ctrl-C, SIGTERM) before it started
    LOCKED = "locked"  # another live apply holds the host
    DISABLED = "disabled"  # the inventory disables the host
    NOT_IN_PLAN = "not_in_plan"  # apply --plan: the host is not in the reviewed plan
    HALTED = "halted"  # an earlier action on this host failed or its outcome is unknown

    @property
    def leaves_work(self) -> bool:
        """True when the skip means the run left work undone (everything but `disabled`)."""
        return self is not SkipReason.DISABLED


# Text written by kbfix 0.1 into `skip_reason` (before the vocabulary was typed): read only.
_LEGACY_SKIPS = (("outside window", SkipReason.WINDOW), ("stopped before", SkipReason.INTERRUPTED),
                 ("an earlier action", SkipReason.HALTED), ("host connection failed", SkipReason.HALTED))


class ErrorKind(Vocabulary):
    """Why a host has no verdict. Remoting's kinds (`remoting.errors.*.kind`) plus kbfix's own:
    `skipped` (the run did not work on it), `internal` (a kbfix bug), `interrupted` (still running
    after the stop grace period), `config` (no endpoint in the inventory)."""

    ERROR = "error"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    CERTIFICATE = "certificate"
    CONFIG = "config"
    WSMAN_FAULT = "wsman_fault"
    QUOTA = "quota"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"
    AGENT = "agent"
    CHECK_MODE = "check_mode"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    INTERNAL = "internal"
    INTERRUPTED = "interrupted"
    STORE = "store"  # the audit store could not record (disk full): nothing more was sent

    @classmethod
    def of(cls, kind: object) -> ErrorKind | None:
        """The member for a remoting error's `kind` text, None when it is not one of ours."""
        try:
            return cls(kind)
        except ValueError:
            return None

    @property
    def status(self) -> Status:
        """The host status an error of this kind gives: unreachable/timeout → unreachable,
        unknown/interrupted → unknown, skipped → skipped, anything else → failed."""
        return _ERROR_STATUS.get(self, Status.FAILED)


_ERROR_STATUS = {ErrorKind.UNREACHABLE: Status.UNREACHABLE, ErrorKind.TIMEOUT: Status.UNREACHABLE,
                 ErrorKind.UNKNOWN: Status.UNKNOWN, ErrorKind.INTERRUPTED: Status.UNKNOWN,
                 ErrorKind.SKIPPED: Status.SKIPPED}


class Outcome(Vocabulary):
    """What happened to one executed action (the agent's `installer.run` outcomes, remoting/
    PROTOCOL.md, plus `unknown`: the answer was lost)."""

    SUCCESS = "success"
    REBOOT_REQUIRED = "reboot_required"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, value: object) -> Outcome:
        """The agent's `installer.run` outcome; anything else (missing, unexpected) is `failed`."""
        try:
            return cls(value)
        except ValueError:
            return cls.FAILED

    @property
    def done(self) -> bool:
        """True when the action ran to completion on the host (success or reboot_required)."""
        return self in (Outcome.SUCCESS, Outcome.REBOOT_REQUIRED)


class PackageRef(BaseModel):
    """An operator-supplied update package: KB, file name, SHA-256 (hex), size in bytes."""

    kb: str
    file: str
    sha256: str
    size: int | None = None
    source: str | None = None


class UploadOp(BaseModel):
    """`file.upload` of a package, summarised: host path, total bytes, chunk count and size."""

    name: Literal["file.upload"] = "file.upload"
    path: str
    bytes: int
    chunks: int
    chunk_bytes: int


class InstallerRunOp(BaseModel):
    """`installer.run` (remoting/PROTOCOL.md): path, SHA-256 the agent checks before running,
    arguments, exit codes meaning success / reboot required, log path, timeout in seconds."""

    name: Literal["installer.run"] = "installer.run"
    path: str
    sha256: str
    arg: list[str] = Field(default_factory=list)
    success_codes: list[int] = Field(default_factory=list)
    reboot_codes: list[int] = Field(default_factory=list)
    log_path: str
    timeout: int


class WsusDeclineOp(BaseModel):
    """`wsus.decline_update` of one update id (IUpdate.Decline, WSUS 3.0 administration API)."""

    name: Literal["wsus.decline_update"] = "wsus.decline_update"
    id: str


class WsusWorkaroundOp(BaseModel):
    """`wsus.workaround` (remoting/PROTOCOL.md): over every listed update id, decline if needed →
    approve → decline, the last decline in a finally on the host; `group` the approval target."""

    name: Literal["wsus.workaround"] = "wsus.workaround"
    id: list[str]
    group: str


class WsusApproveOp(BaseModel):
    """`wsus.approve_update`: update id, approval action (e.g. `Install`) and target group."""

    name: Literal["wsus.approve_update"] = "wsus.approve_update"
    id: str
    action: str
    group: str


class SystemRebootOp(BaseModel):
    """`system.reboot` (remoting/PROTOCOL.md): restart Windows after `delay` seconds with `message`."""

    name: Literal["system.reboot"] = "system.reboot"
    delay: str
    message: str | None = None


PlannedOp = Annotated[UploadOp | InstallerRunOp | WsusDeclineOp | WsusApproveOp | WsusWorkaroundOp | SystemRebootOp,
                     Field(discriminator="name")]
"""One agent op of a planned action, typed by its name."""


class ActionKind(Vocabulary):
    """The kinds of planned action and the op names each may send (nothing else is sent)."""

    INSTALL_PACKAGE = "install_package"
    WSUS_DECLINE = "wsus_decline"
    WSUS_APPROVE = "wsus_approve"
    WSUS_WORKAROUND = "wsus_workaround"
    REBOOT = "reboot"  # the journalled restart (playbooks/reboot.py), not a remedy

    @property
    def allowed_ops(self) -> frozenset[str]:
        """The agent op names an action of this kind may send."""
        return _ALLOWED_OPS[self]


_ALLOWED_OPS = {
    ActionKind.INSTALL_PACKAGE: frozenset({"file.upload", "installer.run"}),
    ActionKind.WSUS_DECLINE: frozenset({"wsus.decline_update"}),
    ActionKind.WSUS_APPROVE: frozenset({"wsus.approve_update"}),
    ActionKind.WSUS_WORKAROUND: frozenset({"wsus.workaround"}),
    ActionKind.REBOOT: frozenset({"system.reboot"}),
}


class PlannedAction(BaseModel):
    """One remote action the plan will take on one host.

    kind: see ActionKind; ops: the exact agent ops in order (built from the playbook, the
    package manifest and the facts; apply rebuilds them, it never sends what a plan file says);
    expected_exit_codes for installers; estimated_seconds for window planning.
    """

    id: str
    advisory: str
    kind: ActionKind
    description: str
    ops: list[PlannedOp] = Field(default_factory=list)
    package: PackageRef | None = None
    expected_exit_codes: list[int] = Field(default_factory=list)
    estimated_seconds: float = 0.0
    reversible: bool = True
    note: str | None = None

    @field_validator("ops", mode="before")
    @classmethod
    def _flatten_legacy_ops(cls, value: Any) -> Any:
        # Audit stores written by kbfix 0.1 hold ops as {"name": ..., "args": {...}}.
        if isinstance(value, list):
            return [{"name": o["name"], **o["args"]} if isinstance(o, Mapping) and isinstance(o.get("args"), Mapping)
                    else o for o in value]
        return value

    @property
    def key(self) -> tuple[str, str | None]:
        """What makes two planned actions "the same" across runs and in a reviewed plan: the
        action id and the package's SHA-256 (a re-released package, e.g. KB954960's of
        1 Aug 2008, is a different action)."""
        return (self.id, self.package.sha256.lower() if self.package else None)


class ExecutedAction(BaseModel):
    """What happened when a planned action ran: its outcome, the exit code, times (UTC) and a
    bounded installer log tail."""

    action_id: str
    outcome: Outcome
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
    skip_reason: SkipReason | None = None
    notes: list[str] = Field(default_factory=list)  # added by playbooks: plan/verify remarks (e.g. package missing)
    linked_host: str | None = None  # added by playbooks: a client's WSUS server when it is in the run

    @field_validator("skip_reason", mode="before")
    @classmethod
    def _legacy_skip(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SkipReason._value2member_map_:
            return next((r for prefix, r in _LEGACY_SKIPS if value.startswith(prefix)), SkipReason.INTERRUPTED)
        return value


class HostError(BaseModel):
    """Why a host has no verdict: its kind, a message for people, WS-Man fault code / HRESULT."""

    kind: ErrorKind
    message: str
    hresult: str | None = None


class HostResult(BaseModel):
    """The one per-host value, from gather to report (as Nornir's `Result`).

    Identity (host, address, site), what was read (roles — declared or discovered —, OS info
    from the agent, JSON-ready facts and the SHA-256 `facts_digest` of the facts a plan depends
    on, the host vars used), the verdicts (`findings`, each with its planned and executed
    actions and verification evidence), and why there is no verdict: `error` (typed kind) and/or
    `skip_reason` (typed). `status` is the worst of the findings unless an error or skip says
    otherwise. Stored as JSON in the audit store and in plan files.
    """

    host: str
    address: str | None = None
    site: str | None = None
    roles: list[str] = Field(default_factory=list)
    roles_declared: bool = False
    os: dict[str, Any] = Field(default_factory=dict)
    status: Status
    findings: list[Finding] = Field(default_factory=list)
    error: HostError | None = None
    skip_reason: SkipReason | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    facts_digest: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    history: dict[str, str] = Field(default_factory=dict)  # action kind → ISO time of its last success (store)
    truncated: bool = False
    started: datetime = Field(default_factory=utc_now)
    ended: datetime | None = None

    @classmethod
    def from_findings(cls, host: str, findings: list[Finding], **kw: Any) -> HostResult:
        """Build a result whose status is the worst of its findings."""
        return cls(host=host, findings=findings, status=worst([f.status for f in findings]), **kw)

    def finding(self, advisory: str) -> Finding | None:
        """The finding for `advisory`, or None."""
        return next((f for f in self.findings if f.advisory == advisory), None)

    @property
    def planned(self) -> list[PlannedAction]:
        """Every planned action of every finding, in order."""
        return [p for f in self.findings for p in f.planned]

    @property
    def estimated_seconds(self) -> float:
        """The planned actions' estimate, seconds."""
        return sum(p.estimated_seconds for p in self.planned)

    def with_findings(self, findings: list[Finding], **update: Any) -> HostResult:
        """A copy with these findings and the status recomputed as their worst."""
        return self.model_copy(update={"findings": list(findings), "status": worst([f.status for f in findings]),
                                       "ended": utc_now(), **update})

    @property
    def run_skip(self) -> SkipReason | None:
        """The skip reason of the host, or of its first skipped finding."""
        return self.skip_reason or next((f.skip_reason for f in self.findings if f.skip_reason), None)
