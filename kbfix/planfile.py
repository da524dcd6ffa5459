"""The reviewable plan file (`kbfix plan -o plan.json`, `kbfix apply --plan plan.json`).

One JSON document: format tag and version, the plan run's id and time, the kbfix version, the
inventory digest, and the hosts' results as the plan run left them (`HostResult`: facts and
their SHA-256 digest, findings, and on each finding the planned actions). It is a REQUEST, not
a program: apply takes from it only, per host, the approved action keys (action id + package
SHA-256) and the facts digest, rebuilds every op from the playbook, the manifest and fresh facts,
and refuses a plan whose digest (`PlanDocument.digest`) the audit store did not record when the
plan was made. Written atomically.

Format history: version 1 (kbfix 0.1) held per-host `HostPlan` entries with the ops as data;
it is refused with a message naming the version (make a new plan).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, Field, ValidationError

from playbooks.model import HostResult
from playbooks.reboot import RebootSettings

PLAN_FORMAT: Final = "kbfix/plan"
PLAN_VERSION: Final = 2


class PlanError(ValueError):
    """A plan file that cannot be read or is not a kbfix plan (message names the file)."""


class PlanRefusedError(PlanError):
    """A well-formed plan that apply will not act on (not recorded by a plan run of this store)."""


#: Largest plan file read, bytes. A plan is about 2 KiB per host: 64 MiB covers 30,000 hosts, where a
#: 2.7 GB forged plan took 277 s and 20.8 GB of memory to refuse (issue 20 finding 12).
MAX_PLAN_BYTES = 64 * 1024 * 1024


class PlanDocument(BaseModel):
    """A whole plan (see module docstring)."""

    format: Literal["kbfix/plan"] = PLAN_FORMAT
    version: Literal[2] = PLAN_VERSION
    run_id: str
    created: datetime
    kbfix_version: str
    inventory_hash: str | None = None
    hosts: list[HostResult] = Field(default_factory=list)
    reboot: RebootSettings | None = None  # reboot (issue 21): reviewed restart settings for apply

    def host(self, name: str) -> HostResult | None:
        """The entry of one host, or None."""
        return next((h for h in self.hosts if h.host == name), None)

    @property
    def action_count(self) -> int:
        """How many actions the plan holds, over all hosts."""
        return sum(len(h.planned) for h in self.hosts)

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the document (sorted keys, no whitespace): the
        same for the written file read back, different after any edit of any value."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

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
        """Read and validate a plan file. Raises PlanError naming the file and the bad field, or
        the format version when the file was written by an older kbfix."""
        try:
            with Path(path).open("rb") as fh:
                data = fh.read(MAX_PLAN_BYTES + 1)
        except OSError as exc:
            raise PlanError(f"{path}: {exc.strerror or exc}") from exc
        if len(data) > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB: not a kbfix plan")
        try:
            raw: Any = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PlanError(f"{path}: not UTF-8 text (byte {exc.start}): not a kbfix plan") from None
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from exc
        except RecursionError:
            raise PlanError(f"{path}: nested too deeply: not a kbfix plan") from None
        if isinstance(raw, dict) and raw.get("format") == PLAN_FORMAT and raw.get("version") != PLAN_VERSION:
            raise PlanError(f"{path}: plan format version {raw.get('version')!r} (written by kbfix "
                            f"{raw.get('kbfix_version', '?')}) cannot be applied by this kbfix (format {PLAN_VERSION}): "
                            "make a new plan with `kbfix plan`")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise PlanError(f"{path}: {where or 'document'}: {err.get('msg')}") from exc
