"""The audit store: one SQLite file (WAL) holding every run, what was seen and what was done.

`AuditStore` is safe to share between the runner's worker threads (one connection, one lock)
and between processes (SQLite file locking, `busy_timeout`). Every write is its own committed
transaction, so a `kill -9` loses at most the row being written: an intent row is committed
before its op is sent, its result row after the answer. Audit rows are append-only (the
schema's triggers refuse UPDATE/DELETE); the current state of a run or host is its latest row.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from kbfix.runinfo import RunInfo
from kbfix.store import chain
from kbfix.store.bounds import HOST_RUN_BUDGET, bound_strings, without_lines
from kbfix.store.diskguard import RESERVE_FILE, TxRecorder, is_disk_full, make_reserve, reason
from kbfix.store.schema import LATEST, migrate
from playbooks.model import ExecutedAction, HostResult, PlannedAction

STORE_FILE = "audit.sqlite3"
REDACTED = "***redacted***"
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|api[_-]?key|private[_-]?key", re.I)


def utc_now() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(timezone.utc)


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


_PLAIN = frozenset({str, int, float, bool, type(None)})


@lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact(value: Any) -> Any:
    """A JSON-ready deep copy of `value` with the values of secret-looking keys replaced."""
    kind = type(value)
    if kind in _PLAIN:  # the common leaves first: exact types skip the ABC checks below (perf)
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): (REDACTED if _secret_key(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # Secret renders as *** and unknown objects as their text


class StoreError(RuntimeError):
    """The audit store cannot be used (unknown run, unreadable file, newer schema)."""


class DiskFullError(StoreError):
    """The store's disk is full. `kind` lets the runner report the host it hit as failed (store)."""

    kind = "store"


class HostLockedError(StoreError):
    """Another live kbfix process holds the apply lock of a host. `holder` describes it."""

    def __init__(self, host: str, holder: LockHolder) -> None:
        super().__init__(
            f"host {host} is locked by run {holder.run_id} (pid {holder.pid} on {holder.machine}, "
            f"since {holder.acquired}, lease until {holder.lease_until or '-'}); wait for it to finish, for its "
            f"lease to lapse, or release it with `kbfix unlock {host} --run {holder.run_id}` if that run is gone"
        )
        self.host = host
        self.holder = holder


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
    """An intent row without a result: the op may or may not have run on the host."""

    seq: int
    run_id: str
    host: str
    action: PlannedAction
    at: str


@dataclass(frozen=True)
class ActionOutcome:
    """One stored result row: the intent's action and what happened."""

    run_id: str
    host: str
    action: PlannedAction
    executed: ExecutedAction


def _pid_alive(pid: int) -> bool:
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


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class AuditStore:
    """The audit store at `path` (created and migrated on open).

    Raises StoreError when the file cannot be opened or its schema is newer than this kbfix.
    Use as a context manager or call `close()`.
    """

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self.lock_lease_s = DEFAULT_LOCK_LEASE_S
        self.host_run_budget = HOST_RUN_BUDGET
        self.disk_full = False
        self._host_bytes: dict[tuple[str, str], int] = {}
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        if readonly:
            self._db = self._open_readonly()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an intent row must be on disk before the op it announces is sent.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
            migrate(self._db)
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the audit store: {reason(exc)}") from exc
        make_reserve(self.path)

    def _open_readonly(self) -> sqlite3.Connection:
        """Open for reading only (history, show, report): nothing is created, migrated or
        written, so a store on a read-only mount or owned by another user can still be read.
        Raises StoreError when there is no store or its schema is newer than this kbfix."""
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no audit store here yet (run `kbfix check` first)")
        uri = self.path.resolve().as_uri()
        last: BaseException | None = None
        # mode=ro reads the WAL too but needs its -shm; a read-only folder without one can only be
        # opened immutable (a store closed cleanly has its WAL checkpointed into the file).
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(uri + query, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
                db.execute("PRAGMA busy_timeout=30000")
                row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except sqlite3.Error as exc:
                last = exc
                continue
            version = int(row[0] or 0)
            if version > LATEST:
                db.close()
                raise StoreError(f"{self.path}: audit store schema v{version} is newer than this kbfix "
                                 f"(v{LATEST}); upgrade kbfix")
            return db
        raise StoreError(f"{self.path}: cannot open the audit store for reading: {reason(last)}")

    def _replay_after_full(self, tx: TxRecorder, exc: BaseException) -> sqlite3.Cursor:
        """The disk filled inside a write transaction: roll back, free the reserve, replay the
        transaction's writes and return the last one's cursor. From now on `disk_full` is set:
        no new intent is accepted (`record_intent` raises DiskFullError) and `end_run` closes
        the run as interrupted. Raises DiskFullError when there is no reserve left or the
        transaction had read before writing."""
        if self._db.in_transaction:  # SQLITE_FULL may have rolled the transaction back already
            self._db.execute("ROLLBACK")
        reserve = self.path.with_name(RESERVE_FILE)
        freed = reserve.exists() and not tx.read
        self.disk_full = True
        if freed:
            reserve.unlink()
        if not freed:
            self._db.execute("BEGIN IMMEDIATE")  # the caller's _tx rolls this back
            raise DiskFullError(f"{self.path}: the disk is full ({reason(exc)}); free space, then resume") from exc
        self._db.execute("BEGIN IMMEDIATE")
        cur: sqlite3.Cursor | None = None
        for sql, args in tx.writes:
            cur = self._db.execute(sql, args)
        assert cur is not None
        return cur

    @classmethod
    def in_dir(cls, state_dir: Path | str, *, readonly: bool = False) -> AuditStore:
        """Open `<state_dir>/audit.sqlite3` (read-only: see `_open_readonly`)."""
        return cls(Path(state_dir) / STORE_FILE, readonly=readonly)

    def close(self) -> None:
        """Stop renewing lock leases and close the connection (idempotent)."""
        self._heartbeat_stop.set()
        beat = self._heartbeat
        if beat is not None and beat is not threading.current_thread():
            beat.join(timeout=5)
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[TxRecorder]:
        """One committed write transaction (IMMEDIATE: takes the write lock up front).

        SQLite errors become StoreError naming the file (DiskFullError for a full disk after the
        reserve is used up); a full disk at COMMIT replays the transaction once the reserve is freed.
        """
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:
            tx = TxRecorder(self._db, self._replay_after_full)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield tx
                    # evidence (issue 15): rows and their chain entries commit together. Not through
                    # the recorder: after a full-disk replay the chain is recomputed from the rows as
                    # replayed (their rowids may differ), never replayed.
                    try:
                        chain.append_pending(self._db)
                    except sqlite3.OperationalError as exc:
                        if not is_disk_full(exc):
                            raise
                        self._replay_after_full(tx, exc)
                        chain.append_pending(self._db)
                    try:
                        self._db.execute("COMMIT")
                    except sqlite3.OperationalError as exc:
                        if not is_disk_full(exc):
                            raise
                        self._replay_after_full(tx, exc)
                        chain.append_pending(self._db)
                        self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except DiskFullError:
                raise
            except sqlite3.Error as exc:
                if is_disk_full(exc):
                    self.disk_full = True
                    raise DiskFullError(f"{self.path}: the disk is full ({reason(exc)})") from exc
                raise StoreError(f"{self.path}: {reason(exc)}") from exc

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cur = self._db.execute(sql, args)
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {reason(exc)}") from exc

    # ---- runs -------------------------------------------------------------------------------

    def begin_run(self, info: RunInfo, *, resumes: str | None = None) -> None:
        """Record a new run (options redacted) and its `running` event."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(id, kind, started, operator, kbfix_version, inventory_hash, window, options, resumes,"
                " change_ticket, approved_by) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    info.id,
                    info.kind,
                    info.started.isoformat(),
                    info.operator,
                    info.kbfix_version,
                    info.inventory_hash,
                    info.window,
                    _dumps(redact(info.options)),
                    resumes,
                    info.change_ticket,
                    info.approved_by,
                ),
            )
            db.execute(
                "INSERT INTO run_events(run_id, at, state, detail) VALUES (?,?,?,?)",
                (info.id, info.started.isoformat(), "running", f"pid={os.getpid()} machine={socket.gethostname()}"),
            )

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
            db.execute(
                "INSERT INTO run_events(run_id, at, state, detail) VALUES (?,?,?,?)",
                (run_id, (at or utc_now()).isoformat(), state, detail),
            )

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events in order: dicts with seq, at, state, detail."""
        return self._query("SELECT seq, at, state, detail FROM run_events WHERE run_id=? ORDER BY seq", (run_id,))

    def run_info(self, run_id: str) -> RunInfo:
        """The stored RunInfo; `state`/`ended` come from its latest state event. Raises StoreError."""
        rows = self._query("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        return self._run_from_row(rows[0])

    def _run_from_row(self, row: Mapping[str, Any]) -> RunInfo:
        last = self._query(
            "SELECT at, state FROM run_events WHERE run_id=? AND state!='note' ORDER BY seq DESC LIMIT 1",
            (row["id"],),
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
        rows = self._query("SELECT detail FROM run_events WHERE run_id=? AND state='running' ORDER BY seq LIMIT 1",
                           (run_id,))
        fields = dict(part.split("=", 1) for part in (rows[0]["detail"] or "").split() if "=" in part) if rows else {}
        if "pid" not in fields:
            return False
        if fields.get("machine") != socket.gethostname():
            return True
        return _pid_alive(int(fields["pid"]))

    def list_runs(self, limit: int = 50) -> list[RunInfo]:
        """The newest `limit` runs, newest first."""
        rows = self._query("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,))
        return [self._run_from_row(r) for r in rows]

    def latest_run_id(self, kind: str | None = None) -> str | None:
        """The newest run's id (of `kind` when given), or None for an empty store."""
        if kind:
            rows = self._query("SELECT id FROM runs WHERE kind=? ORDER BY started DESC, id DESC LIMIT 1", (kind,))
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
        rows = self._query("SELECT id FROM runs WHERE id=? OR id LIKE ? ESCAPE '\\'", (ref, _like_prefix(ref)))
        ids = sorted({r["id"] for r in rows})
        if ref in ids:
            return ref
        if len(ids) != 1:
            raise StoreError(f"run {ref!r} {'is ambiguous' if ids else 'not found'} in {self.path}")
        return ids[0]

    def resumed_by(self, run_id: str) -> list[str]:
        """Ids of runs that resumed `run_id`, oldest first."""
        return [r["id"] for r in self._query("SELECT id FROM runs WHERE resumes=? ORDER BY started", (run_id,))]

    def resumes(self, run_id: str) -> str | None:
        """The run that `run_id` resumed, or None."""
        rows = self._query("SELECT resumes FROM runs WHERE id=?", (run_id,))
        return rows[0]["resumes"] if rows else None

    # ---- hosts, facts, findings, plans --------------------------------------------------------

    def record_host(
        self, run_id: str, result: HostResult, *, phase: str = "final", facts: Mapping[str, Any] | None = None
    ) -> int:
        """Append one host's result (and its findings, and facts when given); returns its seq.

        phase: `assess`, `apply`, `verify` or `final`; the latest `final` row is the host's
        result for the run (what reports render). Every string is cut to `MAX_STORED_STRING`
        characters, and once the host has added `host_run_budget` bytes in this run its facts
        and evidence log lines are replaced by a note (status, reasons and versions are kept).
        """
        now = utc_now().isoformat()
        budget_key = (run_id, result.host)
        with self._lock:
            used = self._host_bytes.get(budget_key, 0)
            dumped = bound_strings(result.model_dump(mode="json"))
            result_json = _dumps(dumped)
            facts_json = _dumps(bound_strings(redact(facts))) if facts is not None else None
            size = len(result_json) + len(facts_json or "")
            if used + size > self.host_run_budget or (self.disk_full and facts_json is not None):
                note = (f"not stored: this host passed its {self.host_run_budget} byte store budget "
                        f"for run {run_id}")
                if facts_json is not None:
                    facts_json = _dumps({"_not_stored": f"{len(facts_json)} bytes of facts {note}"})
                result_json = _dumps(without_lines(dumped, f"log lines {note}"))
                dumped = json.loads(result_json)
                size = len(result_json) + len(facts_json or "")
            self._host_bytes[budget_key] = used + size  # (the findings rows repeat the evidence: ≤ 2× this)
            evidence = [_dumps(f.get("evidence", [])) for f in dumped.get("findings", [])]
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO host_results(run_id, host, phase, status, facts_digest, result, at) VALUES (?,?,?,?,?,?,?)",
                    (run_id, result.host, phase, result.status.value, result.facts_digest, result_json, now),
                )
                seq = int(cur.lastrowid or 0)
                for f, ev in zip(result.findings, evidence, strict=True):
                    db.execute(
                        "INSERT INTO findings(host_result_seq, run_id, host, advisory, status, reason, evidence)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (seq, run_id, result.host, f.advisory, f.status.value, f.reason, ev),
                    )
                if facts_json is not None:
                    db.execute(
                        "INSERT INTO facts(run_id, host, phase, digest, facts, at) VALUES (?,?,?,?,?,?)",
                        (run_id, result.host, phase, result.facts_digest, facts_json, now),
                    )
        return seq

    def record_plan(self, run_id: str, host: str, actions: Iterable[PlannedAction], facts_digest: str | None) -> None:
        """Append the planned actions of one host, with the facts digest they were planned on."""
        now = utc_now().isoformat()
        with self._tx() as db:
            for a in actions:
                db.execute(
                    "INSERT INTO planned_actions(run_id, host, action_id, advisory, kind, facts_digest, action, at)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (run_id, host, a.id, a.advisory, a.kind, facts_digest, _dumps(redact(a.model_dump(mode="json"))), now),
                )

    def host_results(self, run_id: str, phase: str = "final") -> list[HostResult]:
        """Each host's latest result of `phase` in the run, sorted by host name."""
        rows = self._query(
            "SELECT h.result FROM host_results h JOIN ("
            " SELECT host, MAX(seq) AS seq FROM host_results WHERE run_id=? AND phase=? GROUP BY host"
            ") last ON h.seq = last.seq ORDER BY h.host",
            (run_id, phase),
        )
        return [HostResult.model_validate_json(r["result"]) for r in rows]

    def facts(self, run_id: str, host: str) -> list[dict[str, Any]]:
        """The host's stored fact sets in the run, oldest first: dicts with phase, digest, facts, at."""
        rows = self._query("SELECT phase, digest, facts, at FROM facts WHERE run_id=? AND host=? ORDER BY seq", (run_id, host))
        return [{**r, "facts": json.loads(r["facts"])} for r in rows]

    def planned(self, run_id: str, host: str | None = None) -> list[tuple[str, PlannedAction, str | None]]:
        """(host, action, facts_digest) for the run's planned actions, in plan order."""
        sql = "SELECT host, action, facts_digest FROM planned_actions WHERE run_id=?"
        args: list[Any] = [run_id]
        if host is not None:
            sql += " AND host=?"
            args.append(host)
        rows = self._query(sql + " ORDER BY seq", args)
        return [(r["host"], PlannedAction.model_validate_json(r["action"]), r["facts_digest"]) for r in rows]

    # ---- the journal: intents and results -------------------------------------------------------

    def record_intent(self, run_id: str, host: str, action: PlannedAction) -> int:
        """Commit an intent row before the action's ops are sent; returns its seq. Raises
        DiskFullError (nothing is sent) once the disk has filled during this store's life."""
        if self.disk_full:
            raise DiskFullError(f"{self.path}: the disk is full: no new change is started")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO intents(run_id, host, action_id, advisory, kind, action, at) VALUES (?,?,?,?,?,?,?)",
                (run_id, host, action.id, action.advisory, action.kind,
                 _dumps(redact(action.model_dump(mode="json"))), utc_now().isoformat()),
            )
            return int(cur.lastrowid or 0)

    def record_result(self, run_id: str, host: str, action_id: str, executed: ExecutedAction) -> int:
        """Append the result of the newest open intent of (run, host, action); returns its seq.

        Raises StoreError when there is no open intent for it (a result without intent would
        be an audit hole).
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT i.seq FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"
                " WHERE i.run_id=? AND i.host=? AND i.action_id=? AND r.seq IS NULL ORDER BY i.seq DESC LIMIT 1",
                (run_id, host, action_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"{host}: result for action {action_id} without an open intent in run {run_id}")
            cur = db.execute(
                "INSERT INTO results(intent_seq, run_id, host, action_id, outcome, exit_code, executed, at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (row[0], run_id, host, action_id, executed.outcome, executed.exit_code,
                 _dumps(redact(executed.model_dump(mode="json"))), utc_now().isoformat()),
            )
            return int(cur.lastrowid or 0)

    def open_intents(self, run_ids: Iterable[str] | str) -> list[OpenIntent]:
        """Intent rows without a result in the given run(s): ops whose outcome is unknown."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        rows = self._query(
            "SELECT i.seq, i.run_id, i.host, i.action, i.at FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"
            " WHERE i.run_id IN (SELECT value FROM json_each(?)) AND r.seq IS NULL ORDER BY i.seq",
            (json.dumps(ids),),
        )
        return [OpenIntent(r["seq"], r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]), r["at"])
                for r in rows]

    def open_intents_for_hosts(self, hosts: Iterable[str]) -> list[OpenIntent]:
        """Intent rows without a result for these hosts, in any run (a crashed earlier run)."""
        rows = self._query(
            "SELECT i.seq, i.run_id, i.host, i.action, i.at FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"
            " WHERE i.host IN (SELECT value FROM json_each(?)) AND r.seq IS NULL ORDER BY i.seq",
            (json.dumps(list(hosts)),),
        )
        return [OpenIntent(r["seq"], r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]), r["at"])
                for r in rows]

    def outcomes(self, run_ids: Iterable[str] | str, host: str | None = None) -> list[ActionOutcome]:
        """Every result row of the given run(s) (optionally one host), oldest first."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        sql = (
            "SELECT r.run_id, r.host, i.action, r.executed FROM results r JOIN intents i ON i.seq = r.intent_seq"
            " WHERE r.run_id IN (SELECT value FROM json_each(?))"
        )
        args: list[Any] = [json.dumps(ids)]
        if host is not None:
            sql += " AND r.host=?"
            args.append(host)
        rows = self._query(sql + " ORDER BY r.seq", args)
        return [ActionOutcome(r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]),
                              ExecutedAction.model_validate_json(r["executed"])) for r in rows]

    def intents(self, run_id: str) -> list[dict[str, Any]]:
        """All intent rows of a run with their result outcome (None when open), in order."""
        return self._query(
            "SELECT i.seq, i.host, i.action_id, i.kind, i.at, r.outcome, r.exit_code, r.at AS result_at"
            " FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq WHERE i.run_id=? ORDER BY i.seq",
            (run_id,),
        )

    def journal(self, run_id: str) -> StoreJournal:
        """A playbooks `Journal` writing into this run."""
        return StoreJournal(self, run_id)

    # ---- evidence: reports written, chain, state across runs (issue 15) ------------------------------

    def record_report(self, run_id: str, path: Path | str, fmt: str, lang: str, sha256: str, size: int) -> int:
        """Append the SHA-256 (hex) and size (bytes) of a report file written for `run_id`; returns its seq."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO reports(run_id, path, format, lang, sha256, size, at) VALUES (?,?,?,?,?,?,?)",
                (run_id, str(Path(path).resolve()), fmt, lang, sha256, size, utc_now().isoformat()),
            )
            return int(cur.lastrowid or 0)

    def reports_with_hash(self, sha256: str) -> list[dict[str, Any]]:
        """Report rows (seq, run_id, path, format, lang, sha256, size, at) with this SHA-256, oldest first."""
        return self._query("SELECT * FROM reports WHERE sha256=? ORDER BY seq", (sha256.lower(),))

    def reports(self, run_id: str) -> list[dict[str, Any]]:
        """The report rows of one run, oldest first."""
        return self._query("SELECT * FROM reports WHERE run_id=? ORDER BY seq", (run_id,))

    def verify_chain(self) -> chain.ChainReport:
        """Recompute the hash chain over every audit row (see kbfix/store/chain.py). Raises
        StoreError when the store cannot be read or has no chain yet (written by a kbfix before
        the evidence migration and not opened for writing since)."""
        with self._lock:
            try:
                if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='chain'").fetchone():
                    raise StoreError(f"{self.path}: no hash chain yet (a store from an older kbfix); "
                                     "any writing kbfix command upgrades it and chains its rows")
                self._db.execute("BEGIN")  # one read snapshot for the whole check
                try:
                    return chain.verify(self._db)
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {reason(exc)}") from exc

    def latest_states(
        self, hosts: Iterable[str] | None = None, *, before_run: str | None = None
    ) -> dict[str, tuple[str, datetime, HostResult]]:
        """Each host's latest known state: host → (run id, UTC time recorded, HostResult) from its
        newest `final` row whose status is not `skipped` (a skip says nothing about the host).
        hosts: only these (default all); before_run: only rows of other runs started no later
        than that one (what a run's skipped hosts rest on)."""
        sql = (
            "SELECT h.run_id, h.host, h.result, h.at FROM host_results h JOIN ("
            " SELECT x.host, MAX(x.seq) AS seq FROM host_results x JOIN runs r ON r.id = x.run_id"
            " WHERE x.phase='final' AND x.status != 'skipped'"
        )
        args: list[Any] = []
        if before_run is not None:
            sql += " AND x.run_id != ? AND r.started <= (SELECT started FROM runs WHERE id=?)"
            args += [before_run, before_run]
        if hosts is not None:
            sql += " AND x.host IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(hosts)))
        sql += " GROUP BY x.host) last ON h.seq = last.seq ORDER BY h.host"
        return {
            r["host"]: (r["run_id"], datetime.fromisoformat(r["at"]), HostResult.model_validate_json(r["result"]))
            for r in self._query(sql, args)
        }

    # ---- host locks ---------------------------------------------------------------------------

    def lock_hosts(self, run_id: str, hosts: Iterable[str], *, pid: int | None = None,
                   lease_s: float | None = None) -> None:
        """Take the apply lock of every host, all or none, with a lease of `lease_s` seconds
        (default `self.lock_lease_s`) that this process renews while it holds any lock.

        A lock is taken over when its holder is provably gone (a process that no longer exists on
        this machine, as before) or when its lease has lapsed (a holder that stopped renewing: a
        crash on another machine or container). Raises HostLockedError naming the holder of the
        first host held otherwise.
        """
        pid = os.getpid() if pid is None else pid
        machine = socket.gethostname()
        now = utc_now()
        lease = timedelta(seconds=self.lock_lease_s if lease_s is None else lease_s)
        with self._tx() as db:
            for host in hosts:
                row = db.execute("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=?",
                                 (host,)).fetchone()
                if row is not None:
                    holder = LockHolder(*row)
                    mine = holder.run_id == run_id and holder.pid == pid
                    if not (mine or _lock_is_stale(holder, machine, now)):
                        raise HostLockedError(host, holder)
                db.execute(
                    "INSERT OR REPLACE INTO host_locks(host, run_id, pid, machine, acquired, lease_until)"
                    " VALUES (?,?,?,?,?,?)",
                    (host, run_id, pid, machine, now.isoformat(), (now + lease).isoformat()),
                )
        if pid == os.getpid():
            self._start_heartbeat()

    def renew_locks(self, lease_s: float | None = None) -> int:
        """Push the lease of every lock this process holds `lease_s` seconds (default
        `self.lock_lease_s`) past now; returns how many locks were renewed."""
        until = utc_now() + timedelta(seconds=self.lock_lease_s if lease_s is None else lease_s)
        with self._tx() as db:
            cur = db.execute("UPDATE host_locks SET lease_until=? WHERE pid=? AND machine=?",
                             (until.isoformat(), os.getpid(), socket.gethostname()))
            return cur.rowcount

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None and self._heartbeat.is_alive():
                return
            self._heartbeat_stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="kbfix-lock-lease", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Renew this process's leases every lease/3 seconds until none is held or the store closes."""
        while not self._heartbeat_stop.wait(max(self.lock_lease_s / 3, 0.05)):
            try:
                if self.renew_locks() == 0:
                    return
            except (sqlite3.Error, StoreError):
                return  # the store is closing or gone: the lease then lapses, as designed

    def unlock_hosts(self, run_id: str, hosts: Iterable[str] | None = None) -> None:
        """Release the run's locks (all of them, or those of `hosts`)."""
        with self._tx() as db:
            if hosts is None:
                db.execute("DELETE FROM host_locks WHERE run_id=?", (run_id,))
            else:
                for host in hosts:
                    db.execute("DELETE FROM host_locks WHERE run_id=? AND host=?", (run_id, host))

    def force_unlock(self, host: str, run_id: str, operator: str) -> LockHolder:
        """An operator releases `host`'s lock held by run `run_id` (`kbfix unlock HOST --run RUN`).

        Writes a `note` event into that run naming the operator, the host and the holder, in the
        same transaction as the release. Raises StoreError when the host holds no lock, or a lock
        of another run (nothing changed).
        """
        with self._tx() as db:
            row = db.execute("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=?",
                             (host,)).fetchone()
            if row is None:
                raise StoreError(f"host {host} holds no lock: nothing to release")
            holder = LockHolder(*row)
            if holder.run_id != run_id:
                raise StoreError(f"host {host} is locked by run {holder.run_id}, not {run_id}: nothing released")
            db.execute("DELETE FROM host_locks WHERE host=? AND run_id=?", (host, run_id))
            db.execute(
                "INSERT INTO run_events(run_id, at, state, detail) VALUES (?,?,?,?)",
                (run_id, utc_now().isoformat(), "note",
                 f"host lock on {host} released by operator {operator} with kbfix unlock (holder pid "
                 f"{holder.pid} on {holder.machine}, acquired {holder.acquired}, lease until {holder.lease_until})"),
            )
        return holder

    def lock_holder(self, host: str) -> LockHolder | None:
        """The current holder of a host's lock, or None."""
        rows = self._query("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=?", (host,))
        return LockHolder(**rows[0]) if rows else None


def _lock_is_stale(holder: LockHolder, machine: str, now: datetime) -> bool:
    """A lock whose holder is provably gone (dead pid on this machine) or whose lease lapsed."""
    if holder.machine == machine and not _pid_alive(holder.pid):
        return True
    if holder.lease_until is None:  # written before leases: only a live local holder keeps it
        return holder.machine != machine
    try:
        until = datetime.fromisoformat(holder.lease_until)
    except ValueError:
        return True
    return until <= now


def _like_prefix(ref: str) -> str:
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class StoreJournal:
    """The playbooks `Journal` for one run: `intent()` commits before the op is sent,
    `result()` after its answer (or with outcome `unknown` when the answer was lost)."""

    def __init__(self, store: AuditStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def intent(self, host: str, action: PlannedAction) -> None:
        """Commit the intent row for `action` on `host`."""
        self.store.record_intent(self.run_id, host, action)

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        """Append the result row for `action` on `host`."""
        self.store.record_result(self.run_id, host, action.id, executed)
