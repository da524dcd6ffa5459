"""The audit store's hash chain: tamper evidence for append-only rows.

Every row of a CHAINED table gets one `chain` row, in commit order:

    row_hash = SHA-256( canonical JSON of [table, {column: value} for the row's non-NULL columns] )
    hash     = SHA-256( previous hash ‖ "\\n" ‖ table ‖ "\\n" ‖ rowid ‖ "\\n" ‖ row_hash )   (hex text)

with the previous hash of the first row being 64 zeros. `append_pending` is called by the store
inside each write transaction, just before COMMIT, so a row and its chain entry commit together;
`verify` recomputes everything and names the first row that no longer matches.

NULL columns are left out of the row hash so that a migration adding a column (NULL in old rows)
keeps old hashes valid; a migration must therefore never add a column with a non-NULL default to
a chained table. What the chain shows: a row changed, deleted or inserted outside kbfix after it
was chained. What it cannot show on its own: someone with write access rebuilding the whole chain
— compare `kbfix audit verify`'s head hash with one filed elsewhere (a change ticket) for that.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from kbfix.store.jsontext import dumps_canonical
from kbfix.store.tables import ROWID_COLUMN

#: The store's SQLAlchemy connection, or a raw sqlite3 one (the legacy migration to v4 chains the
#: rows already in a store through it).
Db = sa.Connection | sqlite3.Connection

CHAINED: tuple[str, ...] = (
    "runs", "run_events", "host_results", "facts", "findings", "planned_actions", "intents", "results", "reports",
)
"""The tables whose rows are chained, in the order pending rows are chained within a commit."""

GENESIS = "0" * 64


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"blob": bytes(value).hex()}
    return value


_PLAIN_COLUMN = frozenset({str, int})  # what SQLite and psycopg give for the chained tables' columns


def row_hash(table: str, row: dict[str, Any]) -> str:
    """SHA-256 (hex) of one row: its table and its non-NULL columns (name → SQLite value).
    The text hashed is `json.dumps([table, body], sort_keys=True, ensure_ascii=False,
    separators=(",", ":"))`; rows of text and integers only are written by ujson (cost, issue 19:
    the same text, kbfix/store/jsontext.py)."""
    body: dict[str, Any] = {}
    plain = type(table) is str
    for k, v in row.items():  # one loop: this runs for every row a transaction adds
        if v is None:
            continue
        if type(v) in _PLAIN_COLUMN and type(k) is str:
            body[k] = v
        else:
            body[k] = _jsonable(v)
            plain = False
    data = dumps_canonical([table, body], plain=plain)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def link_hash(prev: str, table: str, rowid: int, rhash: str) -> str:
    """The chain hash of one entry: SHA-256 over the previous hash, the table, the rowid and the row hash."""
    return hashlib.sha256(f"{prev}\n{table}\n{rowid}\n{rhash}".encode("ascii")).hexdigest()


def _sqlite(db: Db) -> sqlite3.Connection | None:
    """The sqlite3 connection under `db` (itself, or the SQLAlchemy connection's driver connection:
    the same connection, so the same transaction), or None on PostgreSQL. The chain's own reads
    and its entries go straight to it: SQLAlchemy's statement and result layers cost more CPU than
    the statements do, and the chain reads back and hashes every row a write transaction added
    (cost, issue 19). The entries are never replayed by the store's TxRecorder (see AuditStore._tx)."""
    if isinstance(db, sqlite3.Connection):
        return db
    if db.dialect.name == "sqlite":
        raw = db.connection.driver_connection
        if isinstance(raw, sqlite3.Connection):
            return raw
    return None


def _exec(db: Db, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of one statement with `:name` parameters, on either kind of connection.
    On SQLite a read goes to the driver's connection itself (the same connection, so the same
    transaction): SQLAlchemy's statement and result layers cost more CPU than the read does, and
    the chain reads back every row a write transaction added (cost, issue 19)."""
    if sql.lstrip()[:6].upper() == "SELECT":
        db = _sqlite(db) or db
    if isinstance(db, sqlite3.Connection):
        cur = db.execute(sql, dict(params or {}))
        return ([d[0] for d in cur.description] if cur.description else []), cur.fetchall()
    res = db.execute(sa.text(sql), dict(params or {}))
    if not res.returns_rows:
        return [], []
    return list(res.keys()), [tuple(r) for r in res.fetchall()]


def _rows(db: Db, table: str, after: int | None) -> list[tuple[int, dict[str, Any]]]:
    """(rowid, columns) of a table's rows with rowid above `after` (all rows for None), by rowid.

    The rowid is `seq` (SQLite's rowid alias) or ROWID_COLUMN's column (`runs`: SQLite's implicit
    rowid; on PostgreSQL an identity column, left out of the row's columns so the hash is the same)."""
    key = ROWID_COLUMN.get(table, "seq")
    where = "" if after is None else f" WHERE {key} > :after"
    cols, values = _exec(db, f"SELECT {key} AS _rowid_, * FROM {table}{where} ORDER BY {key}",  # noqa: S608 - table from CHAINED
                         {} if after is None else {"after": after})
    out = []
    for value in values:
        row = dict(zip(cols, value, strict=True))
        rid = int(row.pop("_rowid_"))
        if key != "seq":
            row.pop(key, None)
        out.append((rid, row))
    return out


def head(db: Db) -> tuple[int, str]:
    """(number of chain entries, hash of the last one or GENESIS)."""
    _cols, rows = _exec(db, "SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1")
    return (0, GENESIS) if not rows else (int(rows[0][0]), str(rows[0][1]))


def _pending(db: Db) -> tuple[str, dict[str, int | None]]:
    """(the head hash, table → its last chained rowid) for the CHAINED tables holding rows above
    that rowid, in one statement of index lookups: a write transaction touches one to three tables,
    and on PostgreSQL every statement is a round trip to the server."""
    parts = ["(SELECT hash FROM chain ORDER BY seq DESC LIMIT 1)"]
    for table in CHAINED:  # fixed names, no input
        parts.append(f"(SELECT MAX(row_id) FROM chain WHERE tbl='{table}')")  # noqa: S608
        parts.append(f"(SELECT MAX({ROWID_COLUMN.get(table, 'seq')}) FROM {table})")  # noqa: S608
    values = _exec(db, "SELECT " + ", ".join(parts))[1][0]
    pending: dict[str, int | None] = {}
    for i, table in enumerate(CHAINED):
        last, top = values[1 + 2 * i], values[2 + 2 * i]
        if top is not None and (last is None or int(top) > int(last)):
            pending[table] = None if last is None else int(last)
    return (GENESIS if values[0] is None else str(values[0])), pending


def append_pending(db: Db) -> int:
    """Chain every row of CHAINED tables not chained yet (rowid above the table's last chained
    rowid); must run inside the write transaction that inserted them. Returns how many were chained."""
    prev, pending = _pending(db)
    now = datetime.now(timezone.utc).isoformat()
    entries: list[dict[str, Any]] = []
    for table in CHAINED:
        if table not in pending:
            continue
        for rid, row in _rows(db, table, pending[table]):
            rh = row_hash(table, row)
            prev = link_hash(prev, table, rid, rh)
            entries.append({"t": table, "r": rid, "rh": rh, "h": prev, "at": now})
    if entries:
        sql = "INSERT INTO chain(tbl, row_id, row_hash, hash, at) VALUES (:t, :r, :rh, :h, :at)"
        db = _sqlite(db) or db
        if isinstance(db, sqlite3.Connection):
            db.executemany(sql, entries)
        else:
            db.execute(sa.text(sql), entries)
    return len(entries)


@dataclass(frozen=True)
class ChainBreak:
    """The first place the chain does not hold: chain entry seq (None for a row missing from the
    chain), table, rowid, the row's `seq`/`id` column when it has one, and what is wrong."""

    entry: int | None
    table: str
    rowid: int
    key: str
    problem: str

    def __str__(self) -> str:
        where = f"chain entry {self.entry}" if self.entry is not None else "no chain entry"
        return f"{self.table} row {self.key} ({where}): {self.problem}"


@dataclass(frozen=True)
class ChainReport:
    """What `verify` found: entries checked, the head hash, and the first break (None when intact)."""

    entries: int
    head: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """True when every chained row matches and no row is outside the chain."""
        return self.broken is None


def _key(row: dict[str, Any] | None, rowid: int) -> str:
    if row is None:
        return str(rowid)
    for col in ("seq", "id"):
        if row.get(col) is not None:
            return f"{col}={row[col]}"
    return f"rowid={rowid}"


def verify(db: Db) -> ChainReport:
    """Recompute the chain from the rows: every entry's row hash from its row as stored now, every
    link from the previous hash; then look for rows no entry covers (inserted outside kbfix).
    Returns at the first break (chain order; then table order for unchained rows)."""
    tables = {t: dict(_rows(db, t, None)) for t in CHAINED}
    prev = GENESIS
    entries = 0
    covered: dict[str, set[int]] = {t: set() for t in CHAINED}
    for seq, table, rid, stored_row, stored_hash in _exec(db, "SELECT seq, tbl, row_id, row_hash, hash FROM chain ORDER BY seq")[1]:
        entries += 1
        rows = tables.get(table)
        row = None if rows is None else rows.get(int(rid))
        if row is None:
            return ChainReport(entries, prev, ChainBreak(seq, table, rid, _key(None, rid), "row deleted"))
        covered[table].add(int(rid))
        if row_hash(table, row) != stored_row:
            return ChainReport(entries, prev, ChainBreak(seq, table, rid, _key(row, rid),
                                                         "row changed since it was written"))
        expect = link_hash(prev, table, int(rid), stored_row)
        if expect != stored_hash:
            return ChainReport(entries, prev, ChainBreak(seq, table, rid, _key(row, rid),
                                                         "chain entry altered (its hash does not follow from the previous one)"))
        prev = stored_hash
    for table in CHAINED:
        for rid, row in tables[table].items():
            if rid not in covered[table]:
                return ChainReport(entries, prev, ChainBreak(None, table, rid, _key(row, rid),
                                                             "row is not in the chain (written outside kbfix)"))
    return ChainReport(entries, prev, None)


__all__ = ["CHAINED", "GENESIS", "ChainBreak", "ChainReport", "append_pending", "head", "link_hash", "row_hash",
           "verify"]
