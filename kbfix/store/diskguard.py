"""What the audit store does when its disk fills up (issue 20 finding 12).

Before, a full disk mid-apply left the run `running` and lost result rows of ops that had run.
Now the store keeps a reserve file next to itself (`make_reserve`); on SQLITE_FULL it rolls the
transaction back, deletes the reserve and replays the transaction's writes (`TxRecorder` keeps
them), so the rows in flight are kept; it then accepts no new intent and ends the run
`interrupted` with the reason (see `AuditStore._replay_after_full`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

#: A file of this many bytes is kept next to the store and deleted when the disk fills, so that
#: the rows in flight (results of ops already sent, the final host rows, the run's end event)
#: can still be written: a full disk mid-apply loses nothing and leaves no run `running`.
RESERVE_FILE = "audit.reserve"
RESERVE_BYTES = 2 * 1024 * 1024


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrapper (`DBAPIError.orig`), else `exc`."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(exc, sa.exc.DBAPIError) and isinstance(orig, BaseException) else exc


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full") and PostgreSQL's disk_full (53100)."""
    exc = driver_error(exc)
    if getattr(exc, "sqlstate", None) == "53100":
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and (code == sqlite3.SQLITE_FULL or "is full" in str(exc))


Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | Sequence[tuple[Any, ...]] | None
"""A statement's parameters: one row's mapping, a list of rows' mappings (or, for a DriverSQL,
of rows' tuples), or none."""


@dataclass(frozen=True)
class DriverSQL:
    """A statement in the driver's own SQL (SQLite: `?` placeholders), run for a list of row
    tuples through `Connection.exec_driver_sql`: no SQLAlchemy compile or per-row parameter
    processing (cost, issue 19: that cost more CPU than SQLite's inserts of a group of host rows).
    For values that need no type processing on that driver (kbfix/store/tables.py StoredText)."""

    sql: str


Statement = sa.Executable | DriverSQL


def copy_params(params: Params) -> Any:
    """`params` as SQLAlchemy's `Connection.execute` takes them (fresh dicts: a replay reuses them)."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    return [p if isinstance(p, tuple) else dict(p) for p in params]


def run(db: sa.Connection, stmt: Statement, params: Params) -> sa.CursorResult[Any]:
    """Execute one recorded statement on `db` (a DriverSQL through `exec_driver_sql`)."""
    if isinstance(stmt, DriverSQL):
        return db.exec_driver_sql(stmt.sql, copy_params(params))
    return db.execute(stmt, copy_params(params))


class TxRecorder:
    """The connection as one write transaction sees it: statements are remembered so that, when
    the disk fills, the store can free its reserve and replay them. A transaction that read the
    host locks is not replayed (another process may have taken the lock meanwhile); the other
    reads (a result's open intent) are stable while this process holds the host's lock.

    db: the store's connection; on_full(recorder, exc): called on a full disk, replays the
    writes and returns the last result, or raises.
    """

    def __init__(self, db: sa.Connection,
                 on_full: Callable[[TxRecorder, BaseException], sa.CursorResult[Any]]) -> None:
        self.db = db
        self.on_full = on_full
        self.writes: list[tuple[Statement, Params]] = []
        self.read = False

    def execute(self, stmt: Statement | str, params: Params = None) -> sa.CursorResult[Any]:
        """Execute one statement (SQL text with `:name` parameters, a Core statement, or a
        DriverSQL write) in the transaction, replaying the transaction on a full disk. `params`:
        one row's mapping, or a list of them (one statement for many rows)."""
        if isinstance(stmt, str):
            stmt = sa.text(stmt)
        # Not str(stmt): that compiles a Core statement afresh on every call.
        text = stmt.text if isinstance(stmt, sa.TextClause) else ""
        is_read = isinstance(stmt, sa.Select) or text.lstrip()[:6].upper() == "SELECT"
        self.read = self.read or (is_read and "host_locks" in text)  # the lock reads are SQL text
        if not is_read:
            self.writes.append((stmt, params))
        try:
            return run(self.db, stmt, params)
        except sa.exc.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            return self.on_full(self, exc)


def make_reserve(store_path: Path) -> None:
    """Keep RESERVE_BYTES allocated in `RESERVE_FILE` next to the store (best effort: without
    room for it the store runs without a reserve)."""
    reserve = store_path.with_name(RESERVE_FILE)
    try:
        if not reserve.exists() or reserve.stat().st_size < RESERVE_BYTES:
            with reserve.open("wb") as fh:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fh.fileno(), 0, RESERVE_BYTES)  # real blocks, no zeros written
                else:  # pragma: no cover - Windows/macOS controllers
                    fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
    except OSError:
        reserve.unlink(missing_ok=True)


def reason(exc: BaseException | None) -> str:
    """An operator's words for an SQLite/PostgreSQL/OS error (the damaged-file case says so); never
    the SQL statement or its parameters SQLAlchemy adds to its own message."""
    # libpq's messages span lines ("Connection refused\n\tIs the server running…"): one line, so
    # the terminal sanitiser does not show them as literal \n\t.
    text = " ".join(str(driver_error(exc)).split()) if exc is not None else "unknown error"
    if "malformed" in text or "not a database" in text:
        return f"{text}: the file is damaged (restore it from a backup, or move it away to start a new store)"
    if "readonly" in text or "read-only" in text:
        return f"{text}: the file or its folder is read-only"
    return text
