"""Typed rows the audit store returns, and the identities it records (run id, operator, pid)."""

from __future__ import annotations

import getpass
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from playbooks.model import ExecutedAction, PlannedAction, utc_now


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: `20261123T120000Z-ab12cd34` (UTC time + 8 random hex digits;
    4 digits collided in practice when a test started several runs in the same second)."""
    now = now or utc_now()
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def operator_name() -> str:
    """The OS user running kbfix (for the run record); `unknown` when the OS cannot say."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (signal 0 probes, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds a host lock: run id, process id, machine name, UTC time acquired (ISO text)."""

    run_id: str
    pid: int
    machine: str
    acquired: str


@dataclass(frozen=True)
class OpenIntent:
    """An intent row without a result: the op may or may not have run on the host. `at`: UTC
    time the intent was committed."""

    seq: int
    run_id: str
    host: str
    action: PlannedAction
    at: datetime


@dataclass(frozen=True)
class ActionOutcome:
    """One stored result row: the intent's action and what happened."""

    run_id: str
    host: str
    action: PlannedAction
    executed: ExecutedAction
