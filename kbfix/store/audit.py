"""The audit store: every run, what was seen and what was done, in one SQLite file (WAL) in the
state directory, or in a PostgreSQL database shared by several operators and controllers
(`--state postgresql://…`); one schema for both (kbfix/store/tables.py, Alembic migrations).

`AuditStore` is safe to share between the runner's worker threads (one connection, one lock)
and between processes (SQLite file locking with `busy_timeout`; on PostgreSQL an advisory lock
taken by every write transaction, see kbfix/store/engine.py). Every write is its own committed
transaction, so a `kill -9` loses at most the row being written: an intent row is committed
before its op is sent, its result row after the answer. The one exception is a check's final
host rows (`record_host(defer=True)`, kbfix/store/host_rows.py): they are written in groups of up to DEFER_MAX_HOSTS hosts
or DEFER_MAX_AGE_S seconds, so a `kill -9` of a check loses at most that group's verdicts (a
check changes nothing on its hosts: running it again gives them back). Audit rows are append-only (the
schema's triggers refuse UPDATE/DELETE); the current state of a run or host is its latest row.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from kbfix.runinfo import RunInfo
from kbfix.store import chain, engine
from kbfix.store import tables as t
from kbfix.store.bounds import HOST_RUN_BUDGET
from kbfix.store.diskguard import RESERVE_FILE, DriverSQL, TxRecorder, is_disk_full, make_reserve, reason
from kbfix.store.diskguard import run as run_statement
from kbfix.store.errors import DiskFullError, HostLockedError, StoreError  # noqa: F401  (re-exported)
from kbfix.store.evidence_rows import EvidenceStore
from kbfix.store.host_rows import HostRowStore, _HostRows
from kbfix.store.journal import JournalStore, StoreJournal  # noqa: F401  (re-exported)
from kbfix.store.locks import HostLockStore
from kbfix.store.reconnect import RECONNECT_S, connection_lost, discard, reconnect
from kbfix.store.rows import (
    DEFAULT_LOCK_LEASE_S,
    _like_prefix,
    pid_alive,
)
from kbfix.store.rows import dumps_json as _dumps
from playbooks.model import HostResult, PlannedAction, Status, utc_now
from remoting.redaction import redact

log = logging.getLogger(__name__)
_T = TypeVar("_T")

STORE_FILE = "audit.sqlite3"
_DB_ERRORS = (sa.exc.SQLAlchemyError, sqlite3.Error)


class AuditStore(HostRowStore, JournalStore, HostLockStore, EvidenceStore):
    """The audit store at `path`: an SQLite file, or a `postgresql://…` URL (the database must
    exist; its tables are created on first open). Created and migrated on open.

    `path` is the file, or the URL without its password (what messages show); `url` the URL.
    Raises StoreError when the store cannot be opened or its schema is newer than this kbfix.
    Use as a context manager or call `close()`.
    """

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.url: str | None = path if isinstance(path, str) and engine.is_store_url(path) else None
        self.file: Path | None = None if self.url else Path(path)
        self.path: Path | str = engine.safe_url(self.url) if self.url else Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self.lock_lease_s = DEFAULT_LOCK_LEASE_S
        self.host_run_budget = HOST_RUN_BUDGET
        self.disk_full = False
        self._closed = False
        self.reconnect_s = RECONNECT_S  # a lost PostgreSQL connection is tried again this long (seconds)
        self._host_bytes: dict[tuple[str, str], int] = {}
        self._deferred: list[_HostRows] = []
        self._deferred_since: float | None = None  # time.monotonic() of the oldest deferred row
        self._result_writes: dict[str, int] = {}
        self._driver_sql: dict[tuple[str, tuple[str, ...]], DriverSQL] = {}
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        if readonly:
            self._db = self._open_readonly()
            return
        db: sa.Connection | None = None
        try:
            if self.url is not None:
                db = engine.connect_postgresql(self.url)
            else:
                assert self.file is not None
                self.file.parent.mkdir(parents=True, exist_ok=True)
                db = engine.connect_sqlite(self.file)
            engine.prepare(db)
        except (*_DB_ERRORS, RuntimeError, OSError, ValueError) as exc:
            if db is not None:
                db.close()
            raise StoreError(f"{self.path}: cannot open the audit store: {self._reason(exc)}") from exc
        self._db = db
        if self.file is not None:
            make_reserve(self.file)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return "postgresql" if self.url else "sqlite"

    def _reason(self, exc: BaseException | None) -> str:
        text = reason(exc)
        return engine.scrub(text, self.url) if self.url else text

    def _open_readonly(self) -> sa.Connection:
        """Open for reading only (history, show, report): nothing is created, migrated or
        written, so a store on a read-only mount or owned by another user can still be read
        (PostgreSQL: a session whose transactions are READ ONLY).
        Raises StoreError when there is no store or its schema is newer than this kbfix."""
        if self.url is not None:
            try:
                db = engine.connect_postgresql(self.url, readonly=True)
            except _DB_ERRORS as exc:
                raise StoreError(f"{self.path}: cannot open the audit store for reading: {self._reason(exc)}") from exc
            return self._check_readable(db)
        assert self.file is not None
        if not self.file.is_file():
            raise StoreError(f"{self.path}: no audit store here yet (run `kbfix check` first)")
        uri = self.file.resolve().as_uri()
        last: BaseException | None = None
        # mode=ro reads the WAL too but needs its -shm; a read-only folder without one can only be
        # opened immutable (a store closed cleanly has its WAL checkpointed into the file).
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                db = engine.connect_sqlite_readonly(uri + query)
                db.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar()
            except _DB_ERRORS as exc:
                last = exc
                continue
            return self._check_readable(db)
        raise StoreError(f"{self.path}: cannot open the audit store for reading: {self._reason(last)}")

    def _check_readable(self, db: sa.Connection) -> sa.Connection:
        try:
            engine.check_not_newer(db)
            if engine.schema_version(db) == 0:
                raise StoreError(f"{self.path}: no audit store here yet (run `kbfix check` first)")
        except engine.SchemaTooNewError as exc:
            db.close()
            raise StoreError(f"{self.path}: {exc}") from None
        except StoreError:
            db.close()
            raise
        except _DB_ERRORS as exc:
            db.close()
            raise StoreError(f"{self.path}: cannot open the audit store for reading: {self._reason(exc)}") from exc
        return db

    def _replay_after_full(self, tx: TxRecorder, exc: BaseException) -> sa.CursorResult[Any]:
        """The disk filled inside a write transaction: roll back, free the reserve, replay the
        transaction's writes and return the last one's result. From now on `disk_full` is set:
        no new intent is accepted (`record_intent` raises DiskFullError) and `end_run` closes
        the run as interrupted. Raises DiskFullError when there is no reserve left (always on
        PostgreSQL: its disk is the server's) or the transaction had read before writing."""
        engine.end(self._db, commit=False)  # SQLITE_FULL may have rolled the transaction back already
        reserve = self.file.with_name(RESERVE_FILE) if self.file is not None else None
        freed = reserve is not None and reserve.exists() and not tx.read
        self.disk_full = True
        if freed and reserve is not None:
            reserve.unlink()
        engine.begin_write(self._db)  # when not freed, the caller's _tx rolls this back
        if not freed:
            raise DiskFullError(f"{self.path}: the disk is full ({self._reason(exc)}); free space, then resume") from exc
        cur: sa.CursorResult[Any] | None = None
        for stmt, params in tx.writes:
            cur = run_statement(self._db, stmt, params)
        assert cur is not None
        return cur

    def _begin_write(self, tx: TxRecorder) -> None:
        """Open `tx`'s write transaction; on PostgreSQL, on a new connection when the old one was
        lost while idle (`_on_connection`). Raises StoreError or SQLAlchemy's error."""
        self._on_connection(engine.begin_write)
        tx.db = self._db

    def _on_connection(self, work: Callable[[sa.Connection], _T]) -> _T:
        """`work(connection)` for a step that may simply be done again (BEGIN, a read): on
        PostgreSQL, on a new connection when the old one was lost before (`_gone`) or is found
        lost by `work` itself, which then runs once more (kbfix/store/reconnect.py). Raises
        StoreError when no new connection is taken, else what `work` raises."""
        if self._gone:
            self._reconnect(None)
        try:
            return work(self._db)
        except sa.exc.DBAPIError as exc:
            if self.url is None or not connection_lost(exc):
                raise
            self._reconnect(exc)
            return work(self._db)

    @property
    def _gone(self) -> bool:
        """The PostgreSQL connection was lost earlier (at a COMMIT, or no new one was taken then)
        and the store is still open: the next transaction or read needs a new one."""
        return self.url is not None and not self._closed and (self._db.invalidated or self._db.closed)

    def _reconnect(self, exc: BaseException | None) -> None:
        """Replace the lost PostgreSQL connection (kbfix/store/reconnect.py); the same settings
        (read-only stays read-only). Raises StoreError when the server does not take a new
        connection within `reconnect_s` seconds."""
        assert self.url is not None
        url = self.url
        log.warning("%s: the connection to the audit store was lost (%s); opening a new one", self.path,
                    self._reason(exc) if exc is not None else "earlier")
        discard(self._db)
        try:
            self._db = reconnect(lambda: engine.connect_postgresql(url, readonly=self.readonly), self.reconnect_s)
        except _DB_ERRORS as again:
            raise StoreError(f"{self.path}: the connection to the audit store was lost and no new one was taken "
                             f"within {self.reconnect_s:g} s: {self._reason(again)}") from again

    @classmethod
    def in_dir(cls, state: Path | str, *, readonly: bool = False) -> AuditStore:
        """Open `<state>/audit.sqlite3`, or the database when `state` is a `postgresql://…` URL
        (read-only: see `_open_readonly`)."""
        if isinstance(state, str) and engine.is_store_url(state):
            return cls(state, readonly=readonly)
        return cls(Path(state) / STORE_FILE, readonly=readonly)

    def close(self) -> None:
        """Write any deferred host rows, stop renewing lock leases and close the connection
        (idempotent). Raises StoreError when the deferred rows cannot be written."""
        try:
            self.flush()
        finally:
            self._close()

    def _close(self) -> None:
        self._heartbeat_stop.set()
        beat = self._heartbeat
        if beat is not None and beat is not threading.current_thread():
            beat.join(timeout=5)
        with self._lock:
            self._closed = True
            self._db.close()
            self._db.engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[TxRecorder]:
        """One committed write transaction, holding the store's write lock from its start
        (SQLite BEGIN IMMEDIATE; PostgreSQL the advisory lock of kbfix/store/engine.py).

        Database errors become StoreError naming the store (DiskFullError for a full disk after
        the reserve is used up); a full disk at COMMIT replays the transaction once the reserve is freed.
        """
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:
            if self._deferred:  # the rows recorded earlier commit first: the store keeps their order
                self.flush()
            tx = TxRecorder(self._db, self._replay_after_full)
            try:
                self._begin_write(tx)
                try:
                    yield tx
                    # evidence (issue 15): rows and their chain entries commit together. Not through
                    # the recorder: after a full-disk replay the chain is recomputed from the rows as
                    # replayed (their rowids may differ), never replayed.
                    try:
                        chain.append_pending(self._db)
                    except sa.exc.OperationalError as exc:
                        if not is_disk_full(exc):
                            raise
                        self._replay_after_full(tx, exc)
                        chain.append_pending(self._db)
                    try:
                        engine.end(self._db, commit=True)
                    except sa.exc.DBAPIError as exc:
                        if self.url is not None and connection_lost(exc):
                            raise StoreError(
                                f"{self.path}: the connection to the audit store was lost at COMMIT "
                                f"({self._reason(exc)}): whether this write was stored is unknown") from exc
                        if not (isinstance(exc, sa.exc.OperationalError) and is_disk_full(exc)):
                            raise
                        self._replay_after_full(tx, exc)
                        chain.append_pending(self._db)
                        engine.end(self._db, commit=True)
                except BaseException:
                    try:
                        engine.end(self._db, commit=False)
                    except _DB_ERRORS:
                        pass  # the connection is gone: so is its transaction
                    raise
            except DiskFullError:
                raise
            except _DB_ERRORS as exc:
                if self.url is not None and connection_lost(exc):
                    # PostgreSQL rolled the transaction back; its writes are not replayed, since the
                    # keys they carry (findings → host_results.seq) came from sequences, which a
                    # rollback does not give back. The next transaction opens a new connection.
                    raise StoreError(f"{self.path}: the connection to the audit store was lost in a write "
                                     f"({self._reason(exc)}): the server rolled it back, nothing of it "
                                     "was stored") from exc
                if is_disk_full(exc):
                    self.disk_full = True
                    raise DiskFullError(f"{self.path}: the disk is full ({self._reason(exc)})") from exc
                raise StoreError(f"{self.path}: {self._reason(exc)}") from exc

    def _query(self, sql: str, params: Mapping[str, Any] | None = None, *, deferred: bool = True) -> list[dict[str, Any]]:
        """Rows of one read (SQL text with `:name` parameters) as dicts. Raises StoreError.
        deferred: the read may touch host_results, findings or facts, so the deferred host rows
        are written first (False for reads of other tables only: they leave the group whole)."""
        with self._lock:
            if deferred and self._deferred:  # a read sees every row recorded before it
                self.flush()
            try:
                return self._on_connection(
                    lambda db: [dict(r._mapping) for r in db.execute(sa.text(sql), dict(params or {}))])
            except _DB_ERRORS as exc:
                raise StoreError(f"{self.path}: {self._reason(exc)}") from exc

    def _in(self, name: str) -> str:
        """SQL for `IN (…)` over the JSON list in parameter `name` (any length: not one
        parameter per item, which SQLite caps)."""
        if self.dialect == "sqlite":
            return f"(SELECT value FROM json_each(:{name}))"  # noqa: S608
        return f"(SELECT json_array_elements_text(CAST(:{name} AS json)))"

    # ---- runs -------------------------------------------------------------------------------

    def begin_run(self, info: RunInfo, *, resumes: str | None = None) -> None:
        """Record a new run (options redacted) and its `running` event."""
        with self._tx() as db:
            db.execute(t.runs.insert(), dict(
                id=info.id, kind=info.kind, started=info.started.isoformat(), operator=info.operator,
                kbfix_version=info.kbfix_version, inventory_hash=info.inventory_hash, window=info.window,
                options=_dumps(redact(info.options)), resumes=resumes, pid=os.getpid(), machine=socket.gethostname(),
                change_ticket=info.change_ticket, approved_by=info.approved_by,
            ))
            db.execute(t.run_events.insert(), dict(run_id=info.id, at=info.started.isoformat(), state="running",
                                                    detail=None))

    def end_run(self, run_id: str, state: str, detail: str | None = None, *, at: datetime | None = None) -> None:
        """Append the run's final event: `completed` or `interrupted` (with a reason)."""
        if state not in ("completed", "interrupted"):
            raise ValueError(f"end state must be completed or interrupted, not {state!r}")
        if self.disk_full and state == "completed":
            # Not every host could be worked on (no new intent was accepted): resumable, not done.
            state, detail = "interrupted", ("the audit store's disk filled up during the run: hosts not yet "
                                            "started were not changed; free space, then `kbfix apply --resume`")
        self._event(run_id, state, detail, at)

    def note(self, run_id: str, detail: str) -> None:
        """Append a free-text event to a run (e.g. `max-fail stop after batch 2`)."""
        self._event(run_id, "note", detail, None)

    def _event(self, run_id: str, state: str, detail: str | None, at: datetime | None) -> None:
        with self._tx() as db:
            db.execute(t.run_events.insert(), dict(run_id=run_id, at=(at or utc_now()).isoformat(), state=state,
                                                    detail=detail))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events in order: dicts with seq, at, state, detail."""
        return self._query("SELECT seq, at, state, detail FROM run_events WHERE run_id=:r ORDER BY seq", {"r": run_id})

    def run_info(self, run_id: str) -> RunInfo:
        """The stored RunInfo; `state`/`ended` come from its latest state event. Raises StoreError."""
        rows = self._query("SELECT * FROM runs WHERE id=:r", {"r": run_id})
        if not rows:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        return self._run_from_row(rows[0])

    def _run_from_row(self, row: Mapping[str, Any]) -> RunInfo:
        last = self._query(
            "SELECT at, state FROM run_events WHERE run_id=:r AND state!='note' ORDER BY seq DESC LIMIT 1",
            {"r": row["id"]},
        )
        state = last[0]["state"] if last else "running"
        return RunInfo(
            id=row["id"],
            kind=row["kind"],
            started=datetime.fromisoformat(row["started"]),
            ended=datetime.fromisoformat(last[0]["at"]) if state != "running" else None,
            operator=row["operator"],
            change_ticket=row.get("change_ticket"),
            approved_by=row.get("approved_by"),
            kbfix_version=row["kbfix_version"],
            inventory_hash=row["inventory_hash"],
            window=row["window"],
            options=json.loads(row["options"]),
            state=state,
        )

    def run_is_live(self, run_id: str) -> bool:
        """True when the run has no end event and the process that started it still exists
        (on another machine: assumed live, since it cannot be checked from here)."""
        if self.run_info(run_id).state != "running":
            return False
        rows = self._query("SELECT pid, machine FROM runs WHERE id=:r", {"r": run_id})
        if not rows or rows[0]["pid"] is None:
            return False
        if rows[0]["machine"] != socket.gethostname():
            return True
        return pid_alive(int(rows[0]["pid"]))

    def list_runs(self, limit: int = 50) -> list[RunInfo]:
        """The newest `limit` runs, newest first."""
        rows = self._query("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT :n", {"n": limit})
        return [self._run_from_row(r) for r in rows]

    def latest_run_id(self, kind: str | None = None) -> str | None:
        """The newest run's id (of `kind` when given), or None for an empty store."""
        if kind:
            rows = self._query("SELECT id FROM runs WHERE kind=:k ORDER BY started DESC, id DESC LIMIT 1", {"k": kind})
        else:
            rows = self._query("SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT 1")
        return rows[0]["id"] if rows else None

    def resolve_run(self, ref: str) -> str:
        """`latest`, a full id or a unique id prefix → the run id. Raises StoreError."""
        if ref == "latest":
            rid = self.latest_run_id()
            if rid is None:
                raise StoreError(f"no runs in {self.path}")
            return rid
        rows = self._query("SELECT id FROM runs WHERE id=:r OR id LIKE :p ESCAPE '\\'", {"r": ref, "p": _like_prefix(ref)})
        ids = sorted({r["id"] for r in rows})
        if ref in ids:
            return ref
        if len(ids) != 1:
            raise StoreError(f"run {ref!r} {'is ambiguous' if ids else 'not found'} in {self.path}")
        return ids[0]

    def resumed_by(self, run_id: str) -> list[str]:
        """Ids of runs that resumed `run_id`, oldest first."""
        return [r["id"] for r in self._query("SELECT id FROM runs WHERE resumes=:r ORDER BY started", {"r": run_id})]

    def resumes(self, run_id: str) -> str | None:
        """The run that `run_id` resumed, or None."""
        rows = self._query("SELECT resumes FROM runs WHERE id=:r", {"r": run_id})
        return rows[0]["resumes"] if rows else None

    def resume_chain(self, run_id: str) -> list[str]:
        """`run_id`, the run it resumed, the run that one resumed, … (newest first, no repeats)."""
        rows = self._query(
            "WITH RECURSIVE back(id, depth) AS (SELECT CAST(:r AS TEXT), 0 UNION SELECT r.resumes, b.depth + 1"
            " FROM runs r JOIN back b ON r.id = b.id WHERE r.resumes IS NOT NULL AND b.depth < 10000)"
            " SELECT id FROM back ORDER BY depth", {"r": run_id})
        out: list[str] = []
        for r in rows:
            if r["id"] not in out:
                out.append(r["id"])
        return out

    # ---- plan documents -------------------------------------------------------------------------

    def record_plan_document(self, run_id: str, digest: str) -> None:
        """Record the SHA-256 digest of the plan document a plan run produced."""
        with self._tx() as db:
            db.execute(t.plan_documents.insert(), dict(digest=digest, run_id=run_id, at=utc_now().isoformat()))

    def plan_document_run(self, digest: str) -> str | None:
        """The plan run that recorded this plan digest, or None (not a plan of this store)."""
        rows = self._query("SELECT p.run_id FROM plan_documents p JOIN runs r ON r.id = p.run_id"
                           " WHERE p.digest=:d AND r.kind='plan' ORDER BY p.seq LIMIT 1", {"d": digest})
        return rows[0]["run_id"] if rows else None

    # ---- hosts, facts, findings, plans --------------------------------------------------------

    def record_plan(self, run_id: str, host: str, actions: Iterable[PlannedAction], facts_digest: str | None) -> None:
        """Append the planned actions of one host, with the facts digest they were planned on."""
        now = utc_now().isoformat()
        with self._tx() as db:
            for a in actions:
                db.execute(t.planned_actions.insert(), dict(
                    run_id=run_id, host=host, action_id=a.id, advisory=a.advisory, kind=a.kind,
                    facts_digest=facts_digest, action=_dumps(redact(a.model_dump(mode="json"))), at=now))

    def host_results(self, run_id: str, phase: str = "final") -> list[HostResult]:
        """Each host's latest result of `phase` in the run, sorted by host name."""
        rows = self._query(
            "SELECT h.result FROM host_results h JOIN ("
            " SELECT host, MAX(seq) AS seq FROM host_results WHERE run_id=:r AND phase=:p GROUP BY host"
            ") last ON h.seq = last.seq ORDER BY h.host",
            {"r": run_id, "p": phase},
        )
        return [HostResult.model_validate_json(r["result"]) for r in rows]

    def latest_statuses(self, run_ids: Sequence[str]) -> dict[str, Status]:
        """Host → status of its latest `final` row over the given runs (the newest row wins)."""
        rows = self._query(
            "SELECT h.host, h.status FROM host_results h JOIN ("  # noqa: S608
            f" SELECT host, MAX(seq) AS seq FROM host_results WHERE run_id IN {self._in('ids')}"
            " AND phase='final' GROUP BY host) last ON h.seq = last.seq", {"ids": json.dumps(list(run_ids))})
        return {r["host"]: Status(r["status"]) for r in rows}

    def planned_hosts(self, run_ids: Sequence[str]) -> set[str]:
        """The hosts with planned actions in any of the given runs."""
        rows = self._query(f"SELECT DISTINCT host FROM planned_actions WHERE run_id IN {self._in('ids')}",  # noqa: S608
                           {"ids": json.dumps(list(run_ids))})
        return {r["host"] for r in rows}

    def facts(self, run_id: str, host: str) -> list[dict[str, Any]]:
        """The host's stored fact sets in the run, oldest first: dicts with phase, digest, facts, at."""
        rows = self._query("SELECT phase, digest, facts, at FROM facts WHERE run_id=:r AND host=:h ORDER BY seq",
                           {"r": run_id, "h": host})
        return [{**r, "facts": json.loads(r["facts"])} for r in rows]

    def planned(self, run_id: str, host: str | None = None) -> list[tuple[str, PlannedAction, str | None]]:
        """(host, action, facts_digest) for the run's planned actions, in plan order."""
        sql = "SELECT host, action, facts_digest FROM planned_actions WHERE run_id=:r"
        params: dict[str, Any] = {"r": run_id}
        if host is not None:
            sql += " AND host=:h"
            params["h"] = host
        rows = self._query(sql + " ORDER BY seq", params)
        return [(r["host"], PlannedAction.model_validate_json(r["action"]), r["facts_digest"]) for r in rows]
