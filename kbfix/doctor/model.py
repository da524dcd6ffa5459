"""The values `kbfix doctor` produces: one `Step` per check, one `HostDoctor` per host."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class StepStatus(str, Enum):
    """ok; warn (works, but should be fixed); fail (a check cannot run or cannot be trusted);
    skip (not run: an earlier step failed, or it does not apply to this host)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Step:
    """One step's result: name (`connect`, `tls`, ...), status, what was seen (`detail`), the fix
    an operator types when it is not ok, seconds it took, and machine-readable `data`."""

    name: str
    status: StepStatus
    detail: str
    fix: str | None = None
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """`{name, status, detail, fix, seconds (4 decimals), data}` for `--format json`."""
        d = asdict(self)
        d["status"] = self.status.value
        d["seconds"] = round(self.seconds, 4)
        return d


@dataclass
class HostDoctor:
    """All steps of one host. `can_check`: no step failed (a `kbfix check` will work)."""

    host: str
    steps: list[Step] = field(default_factory=list)

    @property
    def can_check(self) -> bool:
        """True when no step failed."""
        return not any(s.status is StepStatus.FAIL for s in self.steps)

    @property
    def failing(self) -> Step | None:
        """The first failed step (the one to fix first)."""
        return next((s for s in self.steps if s.status is StepStatus.FAIL), None)

    def to_json(self) -> dict[str, Any]:
        """`{host, can_check, steps: [Step.to_json()]}`."""
        return {"host": self.host, "can_check": self.can_check, "steps": [s.to_json() for s in self.steps]}
