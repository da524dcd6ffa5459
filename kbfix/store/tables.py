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

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()


class NulFreeText(sa.types.TypeDecorator[str]):
    """TEXT. PostgreSQL's text cannot hold a NUL character (SQLite's can): there a NUL, which only a
    hostile or broken host answer puts in a reason or name, is stored as U+FFFD instead of failing
    the write (JSON columns are unaffected: JSON escapes it as \\u0000)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, str) and dialect.name == "postgresql" and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


StoredText = sa.Text().with_variant(NulFreeText(), "postgresql")
"""The text columns: NulFreeText on PostgreSQL, plain TEXT on SQLite, where a NUL is kept and so
no value needs a look (cost, issue 19: a Python call per text value of every row written)."""


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
    sa.Column("id", StoredText, primary_key=True),
    sa.Column("kind", StoredText, nullable=False),
    sa.Column("started", StoredText, nullable=False),
    sa.Column("operator", StoredText, nullable=False),
    sa.Column("kbfix_version", StoredText, nullable=False),
    sa.Column("inventory_hash", StoredText),
    sa.Column("window", StoredText),
    sa.Column("options", StoredText, nullable=False),  # JSON, secrets redacted
    sa.Column("resumes", StoredText, sa.ForeignKey("runs.id")),  # the interrupted run this one resumes
    sa.Column("pid", Int64),
    sa.Column("machine", StoredText),
    sa.Column("change_ticket", StoredText),
    sa.Column("approved_by", StoredText),
)

run_events = sa.Table(
    "run_events", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("at", StoredText, nullable=False),
    sa.Column("state", StoredText, nullable=False),  # running | completed | interrupted | note
    sa.Column("detail", StoredText),
    sqlite_autoincrement=True,
)

host_results = sa.Table(
    "host_results", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("phase", StoredText, nullable=False),  # assess | apply | verify | final
    sa.Column("status", StoredText, nullable=False),
    sa.Column("facts_digest", StoredText),
    sa.Column("result", StoredText, nullable=False),  # HostResult JSON
    sa.Column("at", StoredText, nullable=False),
    sa.Index("host_results_run", "run_id", "host"),
    sqlite_autoincrement=True,
)

facts = sa.Table(
    "facts", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("phase", StoredText, nullable=False),
    sa.Column("digest", StoredText),
    sa.Column("facts", StoredText, nullable=False),  # JSON
    sa.Column("at", StoredText, nullable=False),
    sqlite_autoincrement=True,
)

findings = sa.Table(
    "findings", metadata, _seq(),
    sa.Column("host_result_seq", SeqKey, sa.ForeignKey("host_results.seq"), nullable=False),
    sa.Column("run_id", StoredText, nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("advisory", StoredText, nullable=False),
    sa.Column("status", StoredText, nullable=False),
    sa.Column("reason", StoredText, nullable=False),
    sa.Column("evidence", StoredText, nullable=False),  # JSON list of Evidence
    sqlite_autoincrement=True,
)

planned_actions = sa.Table(
    "planned_actions", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("action_id", StoredText, nullable=False),
    sa.Column("advisory", StoredText, nullable=False),
    sa.Column("kind", StoredText, nullable=False),
    sa.Column("facts_digest", StoredText),
    sa.Column("action", StoredText, nullable=False),  # PlannedAction JSON
    sa.Column("at", StoredText, nullable=False),
    sqlite_autoincrement=True,
)

intents = sa.Table(
    "intents", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("action_id", StoredText, nullable=False),
    sa.Column("advisory", StoredText, nullable=False),
    sa.Column("kind", StoredText, nullable=False),
    sa.Column("action", StoredText, nullable=False),  # PlannedAction JSON, as about to be sent
    sa.Column("at", StoredText, nullable=False),
    sa.Index("intents_run", "run_id", "host"),
    sqlite_autoincrement=True,
)

results = sa.Table(
    "results", metadata, _seq(),
    sa.Column("intent_seq", SeqKey, sa.ForeignKey("intents.seq"), nullable=False, unique=True),
    sa.Column("run_id", StoredText, nullable=False),
    sa.Column("host", StoredText, nullable=False),
    sa.Column("action_id", StoredText, nullable=False),
    sa.Column("outcome", StoredText, nullable=False),  # success | reboot_required | failed | unknown
    sa.Column("exit_code", Int64),  # Windows exit codes and HRESULTs are unsigned 32-bit
    sa.Column("executed", StoredText, nullable=False),  # ExecutedAction JSON
    sa.Column("at", StoredText, nullable=False),
    sqlite_autoincrement=True,
)

host_locks = sa.Table(
    "host_locks", metadata,
    sa.Column("host", StoredText, primary_key=True),
    sa.Column("run_id", StoredText, nullable=False),
    sa.Column("pid", Int64, nullable=False),
    sa.Column("machine", StoredText, nullable=False),
    sa.Column("acquired", StoredText, nullable=False),
    sa.Column("lease_until", StoredText),  # UTC ISO text; NULL: a lock from before leases
)

plan_documents = sa.Table(
    "plan_documents", metadata, _seq(),
    sa.Column("digest", StoredText, nullable=False),  # SHA-256 of the canonical plan JSON (PlanDocument.digest)
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("at", StoredText, nullable=False),
    sa.Index("plan_documents_digest", "digest"),
    sqlite_autoincrement=True,
)

reports = sa.Table(
    "reports", metadata, _seq(),
    sa.Column("run_id", StoredText, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("path", StoredText, nullable=False),  # as given when written (absolute)
    sa.Column("format", StoredText, nullable=False),
    sa.Column("lang", StoredText, nullable=False),
    sa.Column("sha256", StoredText, nullable=False),  # of the bytes written
    sa.Column("size", Int64, nullable=False),
    sa.Column("at", StoredText, nullable=False),
    sa.Index("reports_sha256", "sha256"),
    sqlite_autoincrement=True,
)

chain = sa.Table(
    "chain", metadata, _seq(),
    sa.Column("tbl", StoredText, nullable=False),
    sa.Column("row_id", Int64, nullable=False),
    sa.Column("row_hash", StoredText, nullable=False),
    sa.Column("hash", StoredText, nullable=False),  # covers the previous entry's hash
    sa.Column("at", StoredText, nullable=False),
    sa.UniqueConstraint("tbl", "row_id"),
    sqlite_autoincrement=True,
)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied", StoredText, nullable=False),
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
