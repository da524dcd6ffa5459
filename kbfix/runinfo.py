"""The identity of one kbfix run, as stored in the audit store and printed in every report."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

RunKind = Literal["check", "plan", "apply", "verify"]


class RunInfo(BaseModel):
    """One run: id (e.g. `20261123T120000Z-ab12`), kind, UTC start/end, operator (`--operator`,
    default `user@machine`), change ticket and approver (`--change-ticket`, `--approved-by`), kbfix version, SHA-256 of the inventory file(s), change window (ISO 8601 `start/end`) and
    the options it ran with (no secrets). `state` is `running`, `completed` or `interrupted`."""

    id: str
    kind: RunKind
    started: datetime
    ended: datetime | None = None
    operator: str
    change_ticket: str | None = None
    approved_by: str | None = None
    kbfix_version: str
    inventory_hash: str | None = None
    window: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    state: Literal["running", "completed", "interrupted"] = "running"
