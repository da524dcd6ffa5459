"""The audit store: runs, hosts, facts, findings, planned and executed actions, host locks.

An SQLite file in WAL mode (the default, in the state directory) or a shared PostgreSQL database
(`--state postgresql://…`), one schema for both (`kbfix.store.tables`, SQLAlchemy Core) brought up
to date by Alembic (`kbfix/store/migrations`; SQLite stores from before it by `kbfix.store.schema`
first). Connections and transactions: `kbfix.store.engine`; the API is `AuditStore` (`kbfix.store.audit`).
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
