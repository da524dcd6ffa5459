"""The audit store's hand-written SQLite migrations v1–v4, kept for stores written before Alembic.

New stores (SQLite or PostgreSQL) get v4 from the Alembic baseline (kbfix/store/tables.py,
kbfix/store/migrations); an SQLite store at v1–v3 is brought to v4 here, then stamped with that
baseline (kbfix/store/engine.py `prepare`). New schema changes are Alembic revisions, not entries
of MIGRATIONS; `schema_version` keeps v4 as its last row on both engines.

`schema_version` holds one row per applied migration (version, UTC time). `migrate()` applies
every migration newer than the highest recorded version, each in its own transaction, so a
store written by an older kbfix is upgraded in place and a newer one is refused.

Audit tables are append-only, enforced by triggers (UPDATE and DELETE abort): a run's state
changes are rows in `run_events`, an executed action is an `intents` row committed before the
op is sent plus a `results` row after it. Only `host_locks` (operational, not evidence) is
updated and deleted; its rows carry a lease (`lease_until`, see `_lock_lease`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from playbooks.model import utc_now

_APPEND_ONLY = ("runs", "run_events", "host_results", "facts", "findings", "planned_actions", "intents", "results")


def _script(db: sqlite3.Connection, text: str) -> None:
    """Run `;`-terminated statements one by one: `executescript` would COMMIT the open
    transaction first and break the migration's atomicity."""
    buf = ""
    for line in text.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            db.execute(buf)
            buf = ""


def _v1(db: sqlite3.Connection) -> None:
    """Runs, events, per-host results, facts, findings, planned and executed actions, locks."""
    _script(
        db,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            started TEXT NOT NULL,
            operator TEXT NOT NULL,
            kbfix_version TEXT NOT NULL,
            inventory_hash TEXT,
            window TEXT,
            options TEXT NOT NULL,            -- JSON, secrets redacted
            resumes TEXT REFERENCES runs(id)  -- the interrupted run this one resumes
        );
        CREATE TABLE run_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            at TEXT NOT NULL,
            state TEXT NOT NULL,              -- running | completed | interrupted | note
            detail TEXT
        );
        CREATE TABLE host_results (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            phase TEXT NOT NULL,              -- assess | apply | verify | final
            status TEXT NOT NULL,
            facts_digest TEXT,
            result TEXT NOT NULL,             -- HostResult JSON
            at TEXT NOT NULL
        );
        CREATE INDEX host_results_run ON host_results(run_id, host);
        CREATE TABLE facts (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            phase TEXT NOT NULL,
            digest TEXT,
            facts TEXT NOT NULL,              -- JSON
            at TEXT NOT NULL
        );
        CREATE TABLE findings (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            host_result_seq INTEGER NOT NULL REFERENCES host_results(seq),
            run_id TEXT NOT NULL,
            host TEXT NOT NULL,
            advisory TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            evidence TEXT NOT NULL            -- JSON list of Evidence
        );
        CREATE TABLE planned_actions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            action_id TEXT NOT NULL,
            advisory TEXT NOT NULL,
            kind TEXT NOT NULL,
            facts_digest TEXT,
            action TEXT NOT NULL,             -- PlannedAction JSON
            at TEXT NOT NULL
        );
        CREATE TABLE intents (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            action_id TEXT NOT NULL,
            advisory TEXT NOT NULL,
            kind TEXT NOT NULL,
            action TEXT NOT NULL,             -- PlannedAction JSON, as about to be sent
            at TEXT NOT NULL
        );
        CREATE INDEX intents_run ON intents(run_id, host);
        CREATE TABLE results (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            intent_seq INTEGER NOT NULL UNIQUE REFERENCES intents(seq),
            run_id TEXT NOT NULL,
            host TEXT NOT NULL,
            action_id TEXT NOT NULL,
            outcome TEXT NOT NULL,            -- success | reboot_required | failed | unknown
            exit_code INTEGER,
            executed TEXT NOT NULL,           -- ExecutedAction JSON
            at TEXT NOT NULL
        );
        CREATE TABLE host_locks (
            host TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            pid INTEGER NOT NULL,
            machine TEXT NOT NULL,
            acquired TEXT NOT NULL
        );
        """
    )
    for table in _APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "  # fixed table names, no input
                f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only'); END"
            )


_LEGACY_LIVENESS = re.compile(r"pid=(\d+) machine=(\S+)")


def _v2(db: sqlite3.Connection) -> None:
    """Run liveness as columns (`runs.pid`, `runs.machine`) instead of `pid=… machine=…` text in
    the `running` event; the SHA-256 digests of the plan documents plan runs produced.

    Existing runs get their columns from the old event text, once, here (the append-only
    trigger on `runs` is lifted for that one UPDATE and restored)."""
    db.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")
    db.execute("ALTER TABLE runs ADD COLUMN machine TEXT")
    db.execute("DROP TRIGGER runs_no_update")
    rows = db.execute("SELECT run_id, detail FROM run_events WHERE state='running' ORDER BY seq").fetchall()
    for run_id, detail in rows:
        m = _LEGACY_LIVENESS.search(detail or "")
        if m:
            db.execute("UPDATE runs SET pid=?, machine=? WHERE id=? AND pid IS NULL", (int(m[1]), m[2], run_id))
    db.execute("CREATE TRIGGER runs_no_update BEFORE UPDATE ON runs "
               "BEGIN SELECT RAISE(ABORT, 'audit table runs is append-only'); END")
    _script(
        db,
        """
        CREATE TABLE plan_documents (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            digest TEXT NOT NULL,             -- SHA-256 of the canonical plan JSON (PlanDocument.digest)
            run_id TEXT NOT NULL REFERENCES runs(id),
            at TEXT NOT NULL
        );
        CREATE INDEX plan_documents_digest ON plan_documents(digest);
        """,
    )
    for verb in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER plan_documents_no_{verb.lower()} BEFORE {verb} ON plan_documents "
                   "BEGIN SELECT RAISE(ABORT, 'audit table plan_documents is append-only'); END")


def _lock_lease(db: sqlite3.Connection) -> None:
    """Host locks get a lease (issue 20 finding 7): `lease_until` (UTC ISO text), renewed by the
    holding process while it runs; a lock past its lease can be taken over even when its holder's
    liveness cannot be checked (another machine or container). Rows from before have no lease
    (NULL): they expire at once unless their holder is provably alive on this machine.
    Idempotent (the column is added only when missing) so that this migration keeps working
    when the project renumbers it (OWNERS: store migration v3)."""
    cols = {row[1] for row in db.execute("PRAGMA table_info(host_locks)")}
    if "lease_until" not in cols:
        db.execute("ALTER TABLE host_locks ADD COLUMN lease_until TEXT")


def _append_only(db: sqlite3.Connection, table: str) -> None:
    for verb in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "  # fixed names, no input
            f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only'); END"
        )


def _v_evidence(db: sqlite3.Connection) -> None:
    """Issue 15 (planned as store v4, after spine's v2 and harden's v3; renumber on merge):
    who and why of a run (change ticket, approver), the SHA-256 of every report written, and the
    hash chain over all audit rows (kbfix/store/chain.py). Rows already in the store are chained
    here, in table order, so an upgraded store is covered from the upgrade on. Idempotent (columns,
    tables, index and triggers only when missing) so it keeps working when renumbered; it must stay
    after every migration that changes chained tables (it hashes the rows as they are then)."""
    from kbfix.store.chain import append_pending

    cols = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for col in ("change_ticket", "approved_by"):
        if col not in cols:
            db.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")  # fixed names, no input
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS reports (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            path TEXT NOT NULL,               -- as given when written (absolute)
            format TEXT NOT NULL,
            lang TEXT NOT NULL,
            sha256 TEXT NOT NULL,             -- of the bytes written
            size INTEGER NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS reports_sha256 ON reports(sha256);
        CREATE TABLE IF NOT EXISTS chain (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            tbl TEXT NOT NULL,
            row_id INTEGER NOT NULL,
            row_hash TEXT NOT NULL,
            hash TEXT NOT NULL,               -- covers the previous entry's hash
            at TEXT NOT NULL,
            UNIQUE (tbl, row_id)
        );
        """
    )
    _append_only(db, "reports")
    _append_only(db, "chain")
    append_pending(db)




MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _lock_lease, _v_evidence)
"""Ordered migrations; migration N (1-based) brings the schema to version N. Only append."""

LATEST = len(MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The store was written by a newer kbfix (its schema version is above `LATEST`)."""


def current_version(db: sqlite3.Connection) -> int:
    """The highest applied schema version; 0 for an empty database."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite3.Connection) -> int:
    """Apply pending migrations, each in one IMMEDIATE transaction; return the resulting version.

    Raises SchemaTooNewError when the store is newer than this kbfix. `db` must be in
    autocommit mode (isolation_level=None) so the explicit transactions here are the only ones.
    """
    version = current_version(db)
    if version > LATEST:
        raise SchemaTooNewError(f"audit store schema v{version} is newer than this kbfix (v{LATEST}); upgrade kbfix")
    while version < LATEST:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = current_version(db)
            if version < LATEST:
                MIGRATIONS[version](db)
                version += 1
                db.execute(
                    "INSERT INTO schema_version(version, applied) VALUES (?, ?)",
                    (version, utc_now().isoformat()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return version
