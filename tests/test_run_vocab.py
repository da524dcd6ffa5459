"""The typed vocabularies and the one-home rules: error kinds cover remoting's, one redaction
rule everywhere, run liveness as a column (store migration v2 reads kbfix 0.1 stores)."""

from __future__ import annotations

import inspect
import os
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import remoting.errors as rerr
from inventory.resolve import is_secret_name
from kbfix.report.document import redact as report_redact
from kbfix.runinfo import RunInfo
from kbfix.store import AuditStore, new_run_id
from kbfix.store.schema import MIGRATIONS
from playbooks.model import ErrorKind, Finding, SkipReason, Status
from remoting.redaction import REDACTED, redact


def test_every_remoting_error_kind_is_an_error_kind() -> None:
    kinds = {c.kind for _n, c in inspect.getmembers(rerr, inspect.isclass) if issubclass(c, rerr.RemotingError)}
    assert kinds and all(ErrorKind.of(k) is not None for k in kinds), kinds


def test_failure_is_not_needs_work() -> None:
    assert {s for s in Status if s.is_failure} == {Status.FAILED, Status.UNREACHABLE, Status.UNKNOWN}
    assert {s for s in Status if s.needs_work} == {Status.NON_COMPLIANT, Status.PENDING_REBOOT}
    assert not any(s.is_failure and s.needs_work for s in Status)


def test_legacy_free_text_skip_reasons_still_read() -> None:
    f = Finding.model_validate({"advisory": "KB954960", "status": "skipped", "reason": "x",
                                "skip_reason": "stopped before this action (window closed or run stopping)"})
    assert f.skip_reason is SkipReason.INTERRUPTED
    assert f"{SkipReason.WINDOW}" == "window" and str(ErrorKind.AUTH) == "auth"


def test_one_secret_rule_for_store_report_and_inventory() -> None:
    data = {"api_key": "k1", "ApiKey": "k2", "ansible_password": "p", "private_key": "pk", "vault_token": "t",
            "password_env": "KBFIX_PASSWORD", "ansible_ssh_private_key_file": "/home/x/.ssh/id", "forks": 5}
    masked = {"api_key", "ApiKey", "ansible_password", "private_key", "vault_token"}
    for out in (redact(data), report_redact(data)):
        assert {k for k, v in out.items() if v == REDACTED} == masked
    assert {k for k in data if is_secret_name(k)} == masked


def _v1_store_with_a_running_run(path: Path, pid: int) -> str:
    """A kbfix 0.1 store: schema v1 only, liveness as `pid=… machine=…` text in the event."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    db.execute("BEGIN")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00+00:00')")
    rid = new_run_id()
    db.execute("INSERT INTO runs(id, kind, started, operator, kbfix_version, options) VALUES (?,?,?,?,?,?)",
               (rid, "apply", datetime.now(timezone.utc).isoformat(), "op", "0.1.0", "{}"))
    db.execute("INSERT INTO run_events(run_id, at, state, detail) VALUES (?,?,?,?)",
               (rid, datetime.now(timezone.utc).isoformat(), "running", f"pid={pid} machine={socket.gethostname()}"))
    db.execute("COMMIT")
    db.close()
    return rid


def test_v2_migration_moves_liveness_into_columns(tmp_path: Path) -> None:
    live = _v1_store_with_a_running_run(tmp_path / "a.sqlite3", os.getpid())
    dead = _v1_store_with_a_running_run(tmp_path / "b.sqlite3", 2**22 + 12345)  # above Linux's pid_max default
    with AuditStore(tmp_path / "a.sqlite3") as a, AuditStore(tmp_path / "b.sqlite3") as b:
        assert a.run_is_live(live) and not b.run_is_live(dead)
        row = a._query("SELECT pid, machine FROM runs WHERE id=:r", {"r": live})[0]
        assert row == {"pid": os.getpid(), "machine": socket.gethostname()}
        info = RunInfo(id=new_run_id(), kind="check", started=datetime.now(timezone.utc), operator="op",
                       kbfix_version="0.2.0")
        a.begin_run(info)
        assert a.run_is_live(info.id)
        assert [e["detail"] for e in a.events(info.id)] == [None]  # no liveness text in the event any more
