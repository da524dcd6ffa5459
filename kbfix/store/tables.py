"""The audit store's schema (v4) as SQLAlchemy Core tables, one definition for SQLite and PostgreSQL.

The Alembic baseline (`kbfix/store/migrations/versions/0001_v4_baseline.py`) creates these tables
and `append_only_ddl()`'s triggers on an empty database; legacy SQLite stores are brought to v4
by `kbfix.store.schema` first, whose hand-written DDL these tables match column for column.

Types: every time is ISO 8601 UTC text and every document JSON text, as the SQLite store always
kept them (the hash chain hashes the stored values, so they must read back the same on both
engines). Sequence keys are `INTEGER PRIMARY KEY AUTOINCREMENT` on SQLite (the rowid, never
reused) and `BIGINT` identity columns on PostgreSQL.

PostgreSQL has no rowid: `runs` (keyed by its text id) gets a `rowid` identity column there, so
the chain can take its rows in insertion order as on SQLite (`ROWID_COLUMN`); chain.py leaves a
column of that name out of the row hash.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: The integer key of a sequence table: the SQLite rowid alias, a 64-bit identity on PostgreSQL.
SeqKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

APPEND_ONLY: tuple[str, ...] = (
    "runs", "run_events", "host_results", "facts", "findings", "planned_actions", "intents", "results",
    "plan_documents", "reports", "chain",
)
"""Audit tables: their triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""

ROWID_COLUMN: dict[str, str] = {"runs": "rowid"}
"""The insertion-order integer of a table when it is not `seq` (SQLite: the implicit rowid;
PostgreSQL: the identity column the baseline adds to `runs`)."""


def _seq() -> sa.Column[int]:
    return sa.Column("seq", SeqKey, sa.Identity(), primary_key=True)



runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("started", sa.Text, nullable=False),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("kbfix_version", sa.Text, nullable=False),
    sa.Column("inventory_hash", sa.Text),
    sa.Column("window", sa.Text),
    sa.Column("options", sa.Text, nullable=False),  # JSON, secrets redacted
    sa.Column("resumes", sa.Text, sa.ForeignKey("runs.id")),  # the interrupted run this one resumes
    sa.Column("pid", Int64),
    sa.Column("machine", sa.Text),
    sa.Column("change_ticket", sa.Text),
    sa.Column("approved_by", sa.Text),
)

run_events = sa.Table(
    "run_events", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # running | completed | interrupted | note
    sa.Column("detail", sa.Text),
    sqlite_autoincrement=True,
)

host_results = sa.Table(
    "host_results", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),  # assess | apply | verify | final
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("facts_digest", sa.Text),
    sa.Column("result", sa.Text, nullable=False),  # HostResult JSON
    sa.Column("at", sa.Text, nullable=False),
    sa.Index("host_results_run", "run_id", "host"),
    sqlite_autoincrement=True,
)

facts = sa.Table(
    "facts", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("digest", sa.Text),
    sa.Column("facts", sa.Text, nullable=False),  # JSON
    sa.Column("at", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)

findings = sa.Table(
    "findings", metadata, _seq(),
    sa.Column("host_result_seq", SeqKey, sa.ForeignKey("host_results.seq"), nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("advisory", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON list of Evidence
    sqlite_autoincrement=True,
)

planned_actions = sa.Table(
    "planned_actions", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("action_id", sa.Text, nullable=False),
    sa.Column("advisory", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("facts_digest", sa.Text),
    sa.Column("action", sa.Text, nullable=False),  # PlannedAction JSON
    sa.Column("at", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)

intents = sa.Table(
    "intents", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("action_id", sa.Text, nullable=False),
    sa.Column("advisory", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),  # PlannedAction JSON, as about to be sent
    sa.Column("at", sa.Text, nullable=False),
    sa.Index("intents_run", "run_id", "host"),
    sqlite_autoincrement=True,
)

results = sa.Table(
    "results", metadata, _seq(),
    sa.Column("intent_seq", SeqKey, sa.ForeignKey("intents.seq"), nullable=False, unique=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("action_id", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # success | reboot_required | failed | unknown
    sa.Column("exit_code", Int64),  # Windows exit codes and HRESULTs are unsigned 32-bit
    sa.Column("executed", sa.Text, nullable=False),  # ExecutedAction JSON
    sa.Column("at", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)

host_locks = sa.Table(
    "host_locks", metadata,
    sa.Column("host", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("pid", Int64, nullable=False),
    sa.Column("machine", sa.Text, nullable=False),
    sa.Column("acquired", sa.Text, nullable=False),
    sa.Column("lease_until", sa.Text),  # UTC ISO text; NULL: a lock from before leases
)

plan_documents = sa.Table(
    "plan_documents", metadata, _seq(),
    sa.Column("digest", sa.Text, nullable=False),  # SHA-256 of the canonical plan JSON (PlanDocument.digest)
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("at", sa.Text, nullable=False),
    sa.Index("plan_documents_digest", "digest"),
    sqlite_autoincrement=True,
)

reports = sa.Table(
    "reports", metadata, _seq(),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # as given when written (absolute)
    sa.Column("format", sa.Text, nullable=False),
    sa.Column("lang", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),  # of the bytes written
    sa.Column("size", Int64, nullable=False),
    sa.Column("at", sa.Text, nullable=False),
    sa.Index("reports_sha256", "sha256"),
    sqlite_autoincrement=True,
)

chain = sa.Table(
    "chain", metadata, _seq(),
    sa.Column("tbl", sa.Text, nullable=False),
    sa.Column("row_id", Int64, nullable=False),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),  # covers the previous entry's hash
    sa.Column("at", sa.Text, nullable=False),
    sa.UniqueConstraint("tbl", "row_id"),
    sqlite_autoincrement=True,
)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied", sa.Text, nullable=False),
)
"""One row per hand-written migration (kbfix/store/schema.py); the baseline writes v4's row, so a
store's `MAX(version)` says the same on both engines and a store from a newer kbfix is refused."""


def append_only_message(table: str) -> str:
    """The text both engines raise for an UPDATE or DELETE of an audit row (tests match "append-only")."""
    return f"audit table {table} is append-only"


def append_only_ddl(dialect: str) -> list[str]:
    """The statements that make every APPEND_ONLY table refuse UPDATE and DELETE on `dialect`
    (`sqlite` or `postgresql`): SQLite triggers `RAISE(ABORT, …)`; on PostgreSQL one plpgsql
    function raising the same text (SQLSTATE 55000, object_not_in_prerequisite_state), fired
    BEFORE UPDATE OR DELETE for each row and BEFORE TRUNCATE. Table names are fixed, no input."""
    out: list[str] = []
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                out.append(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{append_only_message(table)}'); END")
        return out
    out.append(
        "CREATE OR REPLACE FUNCTION kbfix_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'audit table % is append-only', TG_TABLE_NAME USING ERRCODE = '55000'; END $$"
    )
    for table in APPEND_ONLY:
        out.append(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION kbfix_append_only()")
        out.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION kbfix_append_only()")
    return out
