"""The host rows of the audit store: one host's result of a run phase, its findings and its facts
(`record_host`), redacted and bounded (kbfix/store/bounds.py) within the host's byte budget for the
run, and a check's final rows written in groups (`defer=True`, `flush`, `flush_due`)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kbfix.store import tables as t
from kbfix.store.bounds import bounded_tree, without_lines
from kbfix.store.core import StoreCore
from kbfix.store.diskguard import DriverSQL, TxRecorder
from kbfix.store.jsontext import dumps_stored
from kbfix.store.rows import dumps_json as _dumps
from playbooks.model import HostResult, utc_now

#: Deferred host rows (`record_host(defer=True)`, a check's final rows) are written together once
#: this many are waiting, or by `flush_due` once the oldest has waited DEFER_MAX_AGE_S seconds, and
#: before any other write or read of this store object (cost, issue 19: one transaction, one chain
#: append and one fsync per group instead of per host). A crash loses at most these verdicts; a
#: check changes nothing on the hosts, so running it again recovers them.
DEFER_MAX_HOSTS = 50
DEFER_MAX_AGE_S = 0.2


@dataclass(frozen=True)
class _HostRows:
    """The rows of one `record_host`, ready to insert: the host_results row's columns, its
    findings' (advisory, status, reason, evidence JSON) and the facts JSON (None: no facts row)."""

    result_row: dict[str, Any]
    findings: list[tuple[str, str, str, str]]
    facts_json: str | None


class HostRowStore(StoreCore):
    """Mixin of `AuditStore`: host results, findings and facts. `AuditStore.__init__` sets the
    state below (empty group, no bytes counted yet)."""

    host_run_budget: int
    _host_bytes: dict[tuple[str, str], int]  # (run id, host) -> bytes stored so far
    _deferred: list[_HostRows]
    _deferred_since: float | None  # time.monotonic() of the oldest deferred row
    _driver_sql: dict[tuple[str, tuple[str, ...]], DriverSQL]  # (table, columns) -> its SQLite INSERT

    def record_host(
        self, run_id: str, result: HostResult, *, phase: str = "final", facts: Mapping[str, Any] | None = None,
        defer: bool = False,
    ) -> int | None:
        """Append one host's result (and its findings, and facts when given); returns its seq.

        phase: `assess`, `apply`, `verify` or `final`; the latest `final` row is the host's
        result for the run (what reports render). Every string is cut to `MAX_STORED_STRING`
        characters, and once the host has added `host_run_budget` bytes in this run its facts
        and evidence log lines are replaced by a note (status, reasons and versions are kept).

        defer: keep the rows to write with others (see DEFER_MAX_HOSTS; for rows whose loss in a
        crash costs only a re-run: a check's final rows) and return None.
        """
        now = utc_now().isoformat()
        with self._lock:
            rows = self._host_rows(run_id, result, phase, facts, now)
            if defer:
                if self._deferred_since is None:
                    self._deferred_since = time.monotonic()
                self._deferred.append(rows)
                if len(self._deferred) >= DEFER_MAX_HOSTS:
                    self.flush()
                return None
            with self._tx() as db:
                return self._insert_host_rows(db, [rows])[0]

    def flush(self) -> None:
        """Write the deferred host rows now, in one transaction (nothing when none wait).
        Raises StoreError; the rows then stay deferred."""
        with self._lock:
            if not self._deferred:
                return
            rows, since = self._deferred, self._deferred_since
            self._deferred, self._deferred_since = [], None
            try:
                with self._tx() as db:
                    self._insert_host_rows(db, rows)
            except BaseException:
                self._deferred[:0] = rows
                self._deferred_since = since
                raise

    def flush_due(self) -> None:
        """`flush` when the oldest deferred row has waited DEFER_MAX_AGE_S seconds (a run's poll
        loop calls this, so a verdict is stored soon after it arrives). Raises StoreError."""
        since = self._deferred_since
        if since is not None and time.monotonic() - since >= DEFER_MAX_AGE_S:
            self.flush()

    def _host_rows(self, run_id: str, result: HostResult, phase: str, facts: Mapping[str, Any] | None,
                   now: str) -> _HostRows:
        """The stored form of one host result (redacted, bounded, within the host's budget);
        counts its bytes against the budget. Call with the lock held."""
        budget_key = (run_id, result.host)
        used = self._host_bytes.get(budget_key, 0)
        # cost (issue 19): the bounded trees share what the bounds leave as it was with the dump and
        # the facts (copy on write), and plain trees are encoded by ujson (same text, see jsontext).
        dumped, plain = bounded_tree(result.model_dump(mode="json", exclude={"facts", "vars"}),  # facts: `facts` table
                                     secrets=False)
        result_json = dumps_stored(dumped, plain=plain)
        facts_json = None
        if facts is not None:
            facts_tree, facts_plain = bounded_tree(facts, secrets=True)
            facts_json = dumps_stored(facts_tree, plain=facts_plain)
        size = len(result_json) + len(facts_json or "")
        if used + size > self.host_run_budget or (self.disk_full and facts_json is not None):
            note = (f"not stored: this host passed its {self.host_run_budget} byte store budget "
                    f"for run {run_id}")
            if facts_json is not None:
                facts_json = _dumps({"_not_stored": f"{len(facts_json)} bytes of facts {note}"})
            # a copy: the bounded tree shares its unchanged parts (rare path: a host past its budget)
            result_json = _dumps(without_lines(copy.deepcopy(dumped), f"log lines {note}"))
            dumped, plain = json.loads(result_json), False
            size = len(result_json) + len(facts_json or "")
        self._host_bytes[budget_key] = used + size  # (the findings rows repeat the evidence: ≤ 2× this)
        evidence = [dumps_stored(f.get("evidence", []), plain=plain) for f in dumped.get("findings", [])]
        return _HostRows(
            result_row=dict(run_id=run_id, host=result.host, phase=phase, status=result.status.value,
                            facts_digest=result.facts_digest, result=result_json, at=now),
            findings=[(f.advisory, f.status.value, f.reason, ev) for f, ev in zip(result.findings, evidence, strict=True)],
            facts_json=facts_json,
        )

    def _insert_host_rows(self, db: TxRecorder, batch: Sequence[_HostRows]) -> list[int]:
        """Insert the rows of `batch` in the open transaction; returns the host_results seqs.
        Several hosts: one multi-row statement per table (findings and facts after their hosts).
        On SQLite a group's rows go through the driver's own SQL (`_sqlite_insert`; cost, issue 19)."""
        sqlite = self.dialect == "sqlite"
        if len(batch) == 1:
            cur = db.execute(t.host_results.insert(), batch[0].result_row)
            seqs = [int(cur.inserted_primary_key[0] or 0)]  # type: ignore[index]
        elif sqlite:
            # SQLAlchemy sends a RETURNING insert one row per statement here; one executemany and
            # a read of the new keys instead. The transaction holds the write lock and AUTOINCREMENT
            # gives every new row a larger seq than any before, so the seqs above the old maximum,
            # in order, are the rows in the order they were sent.
            before = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM host_results").scalar_one())
            db.execute(self._sqlite_insert(t.host_results, _RESULT_COLUMNS),
                       [tuple(b.result_row[c] for c in _RESULT_COLUMNS) for b in batch])
            seqs = [int(r[0]) for r in db.execute("SELECT seq FROM host_results WHERE seq > :b ORDER BY seq", {"b": before})]
            if len(seqs) != len(batch):  # pragma: no cover - only another writer inside our lock could do this
                raise RuntimeError(f"host_results: {len(seqs)} new rows read back for {len(batch)} written")
        else:
            stmt = t.host_results.insert().returning(t.host_results.c.seq, sort_by_parameter_order=True)
            seqs = [int(r[0]) for r in db.execute(stmt, [b.result_row for b in batch])]
        findings = [(seq, b.result_row["run_id"], b.result_row["host"], adv, status, reason, ev)
                    for b, seq in zip(batch, seqs, strict=True) for adv, status, reason, ev in b.findings]
        facts = [(b.result_row["run_id"], b.result_row["host"], b.result_row["phase"], b.result_row["facts_digest"],
                  b.facts_json, b.result_row["at"])
                 for b in batch if b.facts_json is not None]
        for table, columns, rows in ((t.findings, _FINDING_COLUMNS, findings), (t.facts, _FACT_COLUMNS, facts)):
            if not rows:
                continue
            if sqlite and len(batch) > 1:
                db.execute(self._sqlite_insert(table, columns), rows)
            else:
                dicts = [dict(zip(columns, row, strict=True)) for row in rows]
                db.execute(table.insert(), dicts if len(dicts) > 1 else dicts[0])
        return seqs

    def _sqlite_insert(self, table: sa.Table, columns: tuple[str, ...]) -> DriverSQL:
        """The INSERT of `columns` into `table` in SQLite's own SQL, compiled by SQLAlchemy once per
        store (the values' order is `columns`). Only for SQLite: its text columns are plain TEXT,
        so the values need no processing (kbfix/store/tables.py StoredText)."""
        key = (table.name, columns)
        stmt = self._driver_sql.get(key)
        if stmt is None:
            compiled = table.insert().compile(dialect=self._db.dialect, column_keys=list(columns))
            if tuple(compiled.positiontup or ()) != columns:  # pragma: no cover - a dialect change
                raise RuntimeError(f"{table.name}: unexpected parameter order {compiled.positiontup}")
            stmt = self._driver_sql[key] = DriverSQL(str(compiled))
        return stmt


_RESULT_COLUMNS = ("run_id", "host", "phase", "status", "facts_digest", "result", "at")
_FINDING_COLUMNS = ("host_result_seq", "run_id", "host", "advisory", "status", "reason", "evidence")
_FACT_COLUMNS = ("run_id", "host", "phase", "digest", "facts", "at")
