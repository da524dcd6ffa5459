"""The reviewable plan file (`kbfix plan -o plan.json`, `kbfix apply --plan plan.json`).

One JSON document: format tag and version, the plan run's id and time, the kbfix version, the
inventory digest, and per host the facts the plan rests on (and their SHA-256 digest, which
apply compares to detect drift), the findings and, on each finding, the exact planned actions
(agent ops, package, expected exit codes, estimated seconds). Written atomically; read back
into the same pydantic models, so what was reviewed is what runs.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from playbooks.model import Finding, HostError, Status
from playbooks.reboot import RebootSettings

PLAN_FORMAT = "kbfix/plan"
PLAN_VERSION = 1


class PlanError(ValueError):
    """A plan file that cannot be read or is not a kbfix plan (message names the file)."""


#: Largest plan file read, bytes. A plan is about 2 KiB per host: 64 MiB covers 30,000 hosts, where a
#: 2.7 GB forged plan took 277 s and 20.8 GB of memory to refuse (issue 20 finding 12).
MAX_PLAN_BYTES = 64 * 1024 * 1024


class HostPlan(BaseModel):
    """One host in a plan: facts and their digest, the findings with `planned` actions."""

    host: str
    site: str | None = None
    status: Status
    facts_digest: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)
    error: HostError | None = None  # why a host could not be assessed when the plan was made
    roles: list[str] = Field(default_factory=list)
    os: dict[str, Any] = Field(default_factory=dict)

    @property
    def actions(self) -> int:
        """How many actions are planned for this host."""
        return sum(len(f.planned) for f in self.findings)

    @property
    def estimated_seconds(self) -> float:
        """The plan's estimate for this host's actions, seconds."""
        return sum(p.estimated_seconds for f in self.findings for p in f.planned)


class PlanDocument(BaseModel):
    """A whole plan (see module docstring)."""

    format: Literal["kbfix/plan"] = PLAN_FORMAT
    version: Literal[1] = PLAN_VERSION
    run_id: str
    created: datetime
    kbfix_version: str
    inventory_hash: str | None = None
    hosts: list[HostPlan] = Field(default_factory=list)
    reboot: RebootSettings | None = None  # reboot (issue 21): reviewed restart settings for apply

    def host(self, name: str) -> HostPlan | None:
        """The entry of one host, or None."""
        return next((h for h in self.hosts if h.host == name), None)

    def write(self, path: Path) -> Path:
        """Write the plan as indented UTF-8 JSON, atomically (temp file + rename). Raises OSError."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump_json(indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: Path) -> PlanDocument:
        """Read and validate a plan file. Raises PlanError naming the file and the bad field."""
        try:
            with Path(path).open("rb") as fh:
                data = fh.read(MAX_PLAN_BYTES + 1)
            if len(data) > MAX_PLAN_BYTES:
                raise PlanError(f"{path}: larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB: not a kbfix plan")
            return cls.model_validate_json(data.decode("utf-8"))
        except OSError as exc:
            raise PlanError(f"{path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise PlanError(f"{path}: not UTF-8 text (byte {exc.start}): not a kbfix plan") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise PlanError(f"{path}: {where or 'document'}: {err.get('msg')}") from exc
