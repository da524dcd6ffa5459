"""The journal half of the audit store: an intent row committed before an action's ops are sent,
a result row after its answer, and the queries over them (open intents, outcomes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from kbfix.store import tables as t
from kbfix.store.core import StoreCore
from kbfix.store.errors import DiskFullError, StoreError
from kbfix.store.rows import (
    ActionOutcome,
    OpenIntent,
    dumps_json,
)
from playbooks.model import ExecutedAction, PlannedAction, utc_now
from remoting.redaction import redact

_dumps = dumps_json


#: Hosts per query of `recent_outcomes_by_host` (a run's prefetch of its hosts' history).
OUTCOME_HOSTS_PER_QUERY = 1000


class JournalStore(StoreCore):
    """Mixin of `AuditStore`: intents and results. `AuditStore.__init__` sets the state below."""

    #: host -> result rows this store object has written (`result_writes`: a history read
    #: before then is stale for that host).
    _result_writes: dict[str, int]

    # ---- the journal: intents and results -------------------------------------------------------

    def record_intent(self, run_id: str, host: str, action: PlannedAction) -> int:
        """Commit an intent row before the action's ops are sent; returns its seq. Raises
        DiskFullError (nothing is sent) once the disk has filled during this store's life."""
        if self.disk_full:
            raise DiskFullError(f"{self.path}: the disk is full: no new change is started")
        with self._tx() as db:
            cur = db.execute(t.intents.insert(), dict(
                run_id=run_id, host=host, action_id=action.id, advisory=action.advisory, kind=action.kind,
                action=_dumps(redact(action.model_dump(mode="json"))), at=utc_now().isoformat()))
            return int(cur.inserted_primary_key[0] or 0)  # type: ignore[index]

    def record_result(self, run_id: str, host: str, action_id: str, executed: ExecutedAction) -> int:
        """Append the result of the newest open intent of (run, host, action); returns its seq.

        Raises StoreError when there is no open intent for it (a result without intent would
        be an audit hole).
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT i.seq FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"
                " WHERE i.run_id=:r AND i.host=:h AND i.action_id=:a AND r.seq IS NULL ORDER BY i.seq DESC LIMIT 1",
                {"r": run_id, "h": host, "a": action_id},
            ).fetchone()
            if row is None:
                raise StoreError(f"{host}: result for action {action_id} without an open intent in run {run_id}")
            cur = db.execute(t.results.insert(), dict(
                intent_seq=row[0], run_id=run_id, host=host, action_id=action_id, outcome=executed.outcome,
                exit_code=executed.exit_code, executed=_dumps(redact(executed.model_dump(mode="json"))),
                at=utc_now().isoformat()))
            # Counted before COMMIT: a transaction that then fails only makes a reader re-query.
            self._result_writes[host] = self._result_writes.get(host, 0) + 1
            return int(cur.inserted_primary_key[0] or 0)  # type: ignore[index]

    def result_writes(self, host: str) -> int:
        """How many result rows of `host` this store object has written (or begun writing) so far:
        a history of the host read when this was lower may lack them (kbfix/store/history.py)."""
        return self._result_writes.get(host, 0)

    def open_intents(self, run_ids: Iterable[str] | str) -> list[OpenIntent]:
        """Intent rows without a result in the given run(s): ops whose outcome is unknown."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        rows = self._query(
            "SELECT i.seq, i.run_id, i.host, i.action, i.at FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"  # noqa: S608
            f" WHERE i.run_id IN {self._in('ids')} AND r.seq IS NULL ORDER BY i.seq",
            {"ids": json.dumps(ids)},
        )
        return [OpenIntent(r["seq"], r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]),
                           datetime.fromisoformat(r["at"]))
                for r in rows]

    def open_intents_for_hosts(self, hosts: Iterable[str]) -> list[OpenIntent]:
        """Intent rows without a result for these hosts, in any run (a crashed earlier run)."""
        rows = self._query(
            "SELECT i.seq, i.run_id, i.host, i.action, i.at FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq"  # noqa: S608
            f" WHERE i.host IN {self._in('hosts')} AND r.seq IS NULL ORDER BY i.seq",
            {"hosts": json.dumps(list(hosts))},
        )
        return [OpenIntent(r["seq"], r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]),
                           datetime.fromisoformat(r["at"]))
                for r in rows]

    def outcomes(self, run_ids: Iterable[str] | str, host: str | None = None) -> list[ActionOutcome]:
        """Every result row of the given run(s) (optionally one host), oldest first."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        sql = (
            "SELECT r.run_id, r.host, i.action, r.executed FROM results r JOIN intents i ON i.seq = r.intent_seq"  # noqa: S608
            f" WHERE r.run_id IN {self._in('ids')}"
        )
        params: dict[str, Any] = {"ids": json.dumps(ids)}
        if host is not None:
            sql += " AND r.host=:h"
            params["h"] = host
        rows = self._query(sql + " ORDER BY r.seq", params)
        return [ActionOutcome(r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]),
                              ExecutedAction.model_validate_json(r["executed"])) for r in rows]

    def recent_outcomes(self, host: str, runs: int) -> list[ActionOutcome]:
        """Every result row of `host` in the newest `runs` runs (newest by start, as `list_runs`),
        oldest first: `outcomes(list_runs(runs) ids, host)` in ONE query (`recent_outcomes_by_host`)."""
        return self.recent_outcomes_by_host([host], runs)[host]

    def recent_outcomes_by_host(self, hosts: Sequence[str], runs: int) -> dict[str, list[ActionOutcome]]:
        """`recent_outcomes(host, runs)` for every host of `hosts` (each a key, [] for none), in one
        query per OUTCOME_HOSTS_PER_QUERY hosts (cost, issue 19: a run asks once for all its hosts
        instead of once per host)."""
        out: dict[str, list[ActionOutcome]] = {h: [] for h in hosts}
        names = list(out)
        for start in range(0, len(names), OUTCOME_HOSTS_PER_QUERY):
            rows = self._query(
                "SELECT r.run_id, r.host, i.action, r.executed FROM results r JOIN intents i ON i.seq = r.intent_seq"  # noqa: S608
                f" WHERE r.host IN {self._in('hosts')}"
                " AND r.run_id IN (SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT :n)"
                " ORDER BY r.seq", {"hosts": json.dumps(names[start:start + OUTCOME_HOSTS_PER_QUERY]), "n": runs},
                deferred=False)  # results, intents, runs: no deferred rows
            for r in rows:
                out.setdefault(r["host"], []).append(ActionOutcome(
                    r["run_id"], r["host"], PlannedAction.model_validate_json(r["action"]),
                    ExecutedAction.model_validate_json(r["executed"])))
        return out

    def intents(self, run_id: str) -> list[dict[str, Any]]:
        """All intent rows of a run with their result outcome (None when open), in order."""
        return self._query(
            "SELECT i.seq, i.host, i.action_id, i.kind, i.at, r.outcome, r.exit_code, r.at AS result_at"
            " FROM intents i LEFT JOIN results r ON r.intent_seq = i.seq WHERE i.run_id=:r ORDER BY i.seq",
            {"r": run_id},
        )

    def journal(self, run_id: str) -> StoreJournal:
        """A playbooks `Journal` writing into this run."""
        return StoreJournal(self, run_id)



class StoreJournal:
    """The playbooks `Journal` for one run: `intent()` commits before the op is sent,
    `result()` after its answer (or with outcome `unknown` when the answer was lost)."""

    def __init__(self, store: JournalStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def intent(self, host: str, action: PlannedAction) -> None:
        """Commit the intent row for `action` on `host`."""
        self.store.record_intent(self.run_id, host, action)

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        """Append the result row for `action` on `host`."""
        self.store.record_result(self.run_id, host, action.id, executed)
