"""The evidence half of the audit store (issue 15): the SHA-256 of every report written, the
hash chain over the audit rows, and each host's latest known state across runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kbfix.store import chain, engine
from kbfix.store import tables as t
from kbfix.store.core import StoreCore
from kbfix.store.diskguard import reason
from kbfix.store.errors import StoreError
from kbfix.store.rows import (
    dumps_json,
)
from playbooks.model import HostResult, utc_now

_dumps = dumps_json


class EvidenceStore(StoreCore):
    """Mixin of `AuditStore`: reports, chain, states."""


    # ---- evidence: reports written, chain, state across runs (issue 15) ------------------------------

    def record_report(self, run_id: str, path: Path | str, fmt: str, lang: str, sha256: str, size: int) -> int:
        """Append the SHA-256 (hex) and size (bytes) of a report file written for `run_id`; returns its seq."""
        with self._tx() as db:
            cur = db.execute(t.reports.insert(), dict(
                run_id=run_id, path=str(Path(path).resolve()), format=fmt, lang=lang, sha256=sha256, size=size,
                at=utc_now().isoformat()))
            return int(cur.inserted_primary_key[0] or 0)  # type: ignore[index]

    def reports_with_hash(self, sha256: str) -> list[dict[str, Any]]:
        """Report rows (seq, run_id, path, format, lang, sha256, size, at) with this SHA-256, oldest first."""
        return self._query("SELECT * FROM reports WHERE sha256=:h ORDER BY seq", {"h": sha256.lower()})

    def reports(self, run_id: str) -> list[dict[str, Any]]:
        """The report rows of one run, oldest first."""
        return self._query("SELECT * FROM reports WHERE run_id=:r ORDER BY seq", {"r": run_id})

    def verify_chain(self) -> chain.ChainReport:
        """Recompute the hash chain over every audit row (see kbfix/store/chain.py). Raises
        StoreError when the store cannot be read or has no chain yet (written by a kbfix before
        the evidence migration and not opened for writing since)."""
        with self._lock:
            self.flush()  # deferred host rows are part of what is verified
            try:
                if not sa.inspect(self._db).has_table("chain"):
                    raise StoreError(f"{self.path}: no hash chain yet (a store from an older kbfix); "
                                     "any writing kbfix command upgrades it and chains its rows")
                engine.begin_snapshot(self._db)  # one read snapshot for the whole check
                try:
                    return chain.verify(self._db)
                finally:
                    engine.end(self._db, commit=True)
            except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
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
        params: dict[str, Any] = {}
        if before_run is not None:
            sql += " AND x.run_id != :b AND r.started <= (SELECT started FROM runs WHERE id=:b)"
            params["b"] = before_run
        if hosts is not None:
            sql += f" AND x.host IN {self._in('hosts')}"
            params["hosts"] = json.dumps(list(hosts))
        sql += " GROUP BY x.host) last ON h.seq = last.seq ORDER BY h.host"
        return {
            r["host"]: (r["run_id"], datetime.fromisoformat(r["at"]), HostResult.model_validate_json(r["result"]))
            for r in self._query(sql, params)
        }

