"""Where the audit store lives and how kbfix talks to it: one SQLAlchemy connection to an SQLite
file (the default, in the state directory) or a PostgreSQL database (`postgresql://…`, shared by
every operator and controller), its transactions, and bringing its schema up to date.

Transactions are explicit on both engines (the connection is in driver autocommit and kbfix
sends BEGIN/COMMIT itself, as SQLAlchemy's pysqlite notes describe for BEGIN IMMEDIATE):

- SQLite: `BEGIN IMMEDIATE` takes the file's write lock up front (WAL, synchronous=FULL,
  busy_timeout 30 s, foreign keys on: the PRAGMAs are set on connect).
- PostgreSQL: `BEGIN` then `pg_advisory_xact_lock(WRITE_LOCK)`: one kbfix writer at a time across
  every controller, released at COMMIT/ROLLBACK. The hash chain needs it (entries must be appended
  in one total order, and rows must be chained in the order their keys were allocated, so key
  allocation and commit must not interleave between writers), and it makes a host lock's
  check-then-take atomic across machines, as BEGIN IMMEDIATE does on one machine.

Errors: SQLAlchemy wraps driver errors (`sqlalchemy.exc.DBAPIError`, the driver's in `.orig`);
`kbfix.store.diskguard.reason` words them. A URL is shown only through `safe_url` (no password).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from kbfix.store.schema import LATEST, SchemaTooNewError
from kbfix.store.schema import migrate as migrate_legacy

#: The advisory lock every kbfix write transaction on PostgreSQL takes ("kbfxAUDT" as an int64).
WRITE_LOCK = 0x6B62_6678_4155_4454
#: The Alembic revision this kbfix's tables are at (tests check it is the migrations' head).
HEAD_REVISION = "0001_v4_baseline"
BASELINE_REVISION = "0001_v4_baseline"
_MIGRATIONS = Path(__file__).with_name("migrations")
_URL_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")


def is_store_url(text: str | Path) -> bool:
    """True when `--state`/KBFIX_STATE names a PostgreSQL database rather than a directory."""
    return isinstance(text, str) and text.lower().startswith(_URL_SCHEMES)


def pg_url(url: str) -> sa.URL:
    """The SQLAlchemy URL for a `postgresql://…` (or `postgres://`, `postgresql+psycopg://`) URL:
    always the psycopg 3 driver. Raises StoreError-worthy ValueError for a malformed URL."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"not a PostgreSQL URL: {safe_url(url)}") from exc
    return parsed.set(drivername="postgresql+psycopg")


def store_label(store: Path | str) -> str:
    """A store location as it may be shown in output and errors (a URL's password hidden)."""
    return safe_url(store) if isinstance(store, str) and is_store_url(store) else str(store)


def safe_url(url: str) -> str:
    """The URL as it may be shown (logs, errors, reports): its password replaced by `***`.
    Passwords belong in PGPASSWORD or ~/.pgpass, which libpq reads; never on the command line."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://…"


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password (if any) replaced by `***` (driver messages may echo it)."""
    try:
        password = sa.make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    # FULL: an intent row must be on disk before the op it announces is sent.
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")
    dbapi_conn.execute("PRAGMA busy_timeout=30000")


def connect_sqlite(path: Path) -> sa.Connection:
    """A writable connection to the SQLite store at `path` (created when missing)."""
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool, isolation_level="AUTOCOMMIT",
                              connect_args={"timeout": 30.0, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine.connect()


def connect_sqlite_readonly(uri: str) -> sa.Connection:
    """A read-only connection through an SQLite `file:` URI (`?mode=ro`, `&immutable=1`)."""
    def creator() -> sqlite3.Connection:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    engine = sa.create_engine("sqlite://", creator=creator, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    return engine.connect()


def connect_postgresql(url: str, *, readonly: bool = False) -> sa.Connection:
    """A connection to the PostgreSQL store at `url` (the database must exist; the schema is created
    by `prepare`). Read-only: every transaction of the session is READ ONLY."""
    engine = sa.create_engine(pg_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 15, "application_name": "kbfix"})
    conn = engine.connect()
    if readonly:
        conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    return conn


def begin_write(conn: sa.Connection) -> None:
    """Open the one write transaction (see the module docstring for the locks taken)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})


def begin_snapshot(conn: sa.Connection) -> None:
    """Open a read transaction that sees one snapshot for all its statements."""
    conn.exec_driver_sql("BEGIN" if conn.dialect.name == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ")


def end(conn: sa.Connection, *, commit: bool) -> None:
    """COMMIT or ROLLBACK the open transaction (ROLLBACK is skipped when none is open)."""
    if commit:
        conn.exec_driver_sql("COMMIT")
    elif in_transaction(conn):
        conn.exec_driver_sql("ROLLBACK")


def in_transaction(conn: sa.Connection) -> bool:
    """True while the driver connection has a transaction open (SQLite may end one on its own:
    SQLITE_FULL rolls it back)."""
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        return bool(getattr(raw, "in_transaction", False))
    import psycopg

    return getattr(getattr(raw, "info", None), "transaction_status", None) != psycopg.pq.TransactionStatus.IDLE


def _has_table(conn: sa.Connection, name: str) -> bool:
    return sa.inspect(conn).has_table(name)


def schema_version(conn: sa.Connection) -> int:
    """The store's `MAX(schema_version.version)`; 0 for an empty database."""
    if not _has_table(conn, "schema_version"):
        return 0
    return int(conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0)


def alembic_revision(conn: sa.Connection) -> str | None:
    """The store's Alembic revision, or None (empty database, or a store from before Alembic)."""
    if not _has_table(conn, "alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def check_not_newer(conn: sa.Connection) -> None:
    """Raise SchemaTooNewError when the store was written by a newer kbfix (a higher legacy
    version, or an Alembic revision this kbfix does not have)."""
    version = schema_version(conn)
    if version > LATEST:
        raise SchemaTooNewError(f"audit store schema v{version} is newer than this kbfix (v{LATEST}); upgrade kbfix")
    rev = alembic_revision(conn)
    if rev is not None and rev != HEAD_REVISION and rev not in _known_revisions():
        raise SchemaTooNewError(f"audit store schema revision {rev} is newer than this kbfix "
                                f"({HEAD_REVISION}); upgrade kbfix")


def _alembic_config(conn: sa.Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_MIGRATIONS))
    return {r.revision for r in script.walk_revisions()}


def prepare(conn: sa.Connection) -> None:
    """Bring the store's schema to this kbfix's head; raise SchemaTooNewError for a newer store.

    An empty database gets the Alembic baseline (v4 tables, triggers). A legacy SQLite store
    (v1–v3, no Alembic revision) is first migrated by kbfix/store/schema.py's hand-written
    migrations, each in its own BEGIN IMMEDIATE, then stamped; a v4 store without a revision is
    stamped. The decision is made again inside the write transaction: another process may have
    migrated meanwhile. A store already at HEAD_REVISION costs two reads.
    """
    check_not_newer(conn)
    if alembic_revision(conn) == HEAD_REVISION:
        return
    if conn.dialect.name == "sqlite" and 0 < schema_version(conn) < LATEST:
        migrate_legacy(conn.connection.dbapi_connection)  # type: ignore[arg-type]
    from alembic import command

    begin_write(conn)
    try:
        check_not_newer(conn)
        rev = alembic_revision(conn)
        if rev != HEAD_REVISION:
            cfg = _alembic_config(conn)
            if rev is None and schema_version(conn) == LATEST:
                command.stamp(cfg, BASELINE_REVISION)
            command.upgrade(cfg, "head")
        end(conn, commit=True)
    except BaseException:
        end(conn, commit=False)
        raise
