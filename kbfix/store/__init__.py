"""The audit store: runs, hosts, facts, findings, planned and executed actions, host locks.

SQLite in WAL mode with versioned migrations (`kbfix.store.schema`); the API is `AuditStore`
(`kbfix.store.audit`).
"""

from __future__ import annotations

from kbfix.store.audit import STORE_FILE, AuditStore, HostLockedError, StoreError, StoreJournal
from kbfix.store.rows import ActionOutcome, LockHolder, OpenIntent, new_run_id, operator_name
from kbfix.store.schema import LATEST as SCHEMA_VERSION
from remoting.redaction import redact

__all__ = [
    "SCHEMA_VERSION",
    "STORE_FILE",
    "ActionOutcome",
    "AuditStore",
    "HostLockedError",
    "LockHolder",
    "OpenIntent",
    "StoreError",
    "StoreJournal",
    "new_run_id",
    "operator_name",
    "redact",
]
