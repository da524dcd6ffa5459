"""Typed rows the audit store returns, and the identities it records (run id, operator, pid)."""

from __future__ import annotations

import getpass
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kbfix.store.jsontext import dumps_stored
from playbooks.model import ExecutedAction, PlannedAction, utc_now


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: `20261123T120000Z-ab12cd34` (UTC time + 8 random hex digits;
    4 digits collided in practice when a test started several runs in the same second)."""
    now = now or utc_now()
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def operator_name() -> str:
    """`user@machine`: the OS user running kbfix and this machine's host name (the run record's
    default operator; `--operator` overrides it). `unknown` for a part the OS cannot say."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname() or 'unknown'}"


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
    """Who holds a host lock: run id, process id, machine name, UTC time acquired and end of the
    lease (ISO text; None for a lock written before leases)."""

    run_id: str
    pid: int
    machine: str
    acquired: str
    lease_until: str | None = None


#: Seconds a host lock lasts unless its holder renews it. The holding process renews every
#: lease/3 from a background thread, so only a holder that is gone (or frozen) lets it lapse.
DEFAULT_LOCK_LEASE_S = 600.0


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


def dumps_json(value: Any) -> str:
    """The stored JSON text of a value: sorted keys, UTF-8 kept, unknown objects as their text
    (kbfix/store/jsontext.py `dumps_stored`, its one statement)."""
    return dumps_stored(value)




def _like_prefix(ref: str) -> str:
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
