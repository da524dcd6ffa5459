"""Host locks of the audit store: one apply at a time per host, with a lease the holder renews
while it runs (issue 20 finding 7), and `force_unlock` for a holder that is gone."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from kbfix.store import tables as t
from kbfix.store.core import StoreCore
from kbfix.store.errors import HostLockedError, StoreError
from kbfix.store.rows import (
    LockHolder,
    dumps_json,
    pid_alive,
)
from playbooks.model import utc_now

_dumps = dumps_json


class HostLockStore(StoreCore):
    """Mixin of `AuditStore`: host locks and their leases."""

    if TYPE_CHECKING:  # provided by AuditStore
        lock_lease_s: float
        _heartbeat: threading.Thread | None
        _heartbeat_stop: threading.Event

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
                row = db.execute("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=:h",
                                 {"h": host}).fetchone()
                if row is not None:
                    holder = LockHolder(*tuple(row))
                    mine = holder.run_id == run_id and holder.pid == pid
                    if not (mine or _lock_is_stale(holder, machine, now)):
                        raise HostLockedError(host, holder)
                db.execute(_upsert_lock(self._db.dialect.name, dict(
                    host=host, run_id=run_id, pid=pid, machine=machine, acquired=now.isoformat(),
                    lease_until=(now + lease).isoformat())))
        if pid == os.getpid():
            self._start_heartbeat()

    def renew_locks(self, lease_s: float | None = None) -> int:
        """Push the lease of every lock this process holds `lease_s` seconds (default
        `self.lock_lease_s`) past now; returns how many locks were renewed."""
        until = utc_now() + timedelta(seconds=self.lock_lease_s if lease_s is None else lease_s)
        with self._tx() as db:
            cur = db.execute("UPDATE host_locks SET lease_until=:u WHERE pid=:p AND machine=:m",
                             {"u": until.isoformat(), "p": os.getpid(), "m": socket.gethostname()})
            return int(cur.rowcount)

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
            except (sa.exc.SQLAlchemyError, sqlite3.Error, StoreError):
                return  # the store is closing or gone: the lease then lapses, as designed

    def unlock_hosts(self, run_id: str, hosts: Iterable[str] | None = None) -> None:
        """Release the run's locks (all of them, or those of `hosts`)."""
        with self._tx() as db:
            if hosts is None:
                db.execute("DELETE FROM host_locks WHERE run_id=:r", {"r": run_id})
            else:
                for host in hosts:
                    db.execute("DELETE FROM host_locks WHERE run_id=:r AND host=:h", {"r": run_id, "h": host})

    def force_unlock(self, host: str, run_id: str, operator: str) -> LockHolder:
        """An operator releases `host`'s lock held by run `run_id` (`kbfix unlock HOST --run RUN`).

        Writes a `note` event into that run naming the operator, the host and the holder, in the
        same transaction as the release. Raises StoreError when the host holds no lock, or a lock
        of another run (nothing changed).
        """
        with self._tx() as db:
            row = db.execute("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=:h",
                             {"h": host}).fetchone()
            if row is None:
                raise StoreError(f"host {host} holds no lock: nothing to release")
            holder = LockHolder(*tuple(row))
            if holder.run_id != run_id:
                raise StoreError(f"host {host} is locked by run {holder.run_id}, not {run_id}: nothing released")
            db.execute("DELETE FROM host_locks WHERE host=:h AND run_id=:r", {"h": host, "r": run_id})
            db.execute(t.run_events.insert(), dict(
                run_id=run_id, at=utc_now().isoformat(), state="note",
                detail=f"host lock on {host} released by operator {operator} with kbfix unlock (holder pid "
                       f"{holder.pid} on {holder.machine}, acquired {holder.acquired}, lease until {holder.lease_until})"))
        return holder

    def lock_holder(self, host: str) -> LockHolder | None:
        """The current holder of a host's lock, or None."""
        rows = self._query("SELECT run_id, pid, machine, acquired, lease_until FROM host_locks WHERE host=:h", {"h": host})
        return LockHolder(**rows[0]) if rows else None




def _lock_is_stale(holder: LockHolder, machine: str, now: datetime) -> bool:
    """A lock whose holder is provably gone (dead pid on this machine) or whose lease lapsed."""
    if holder.machine == machine and not pid_alive(holder.pid):
        return True
    if holder.lease_until is None:  # written before leases: only a live local holder keeps it
        return holder.machine != machine
    try:
        until = datetime.fromisoformat(holder.lease_until)
    except ValueError:
        return True
    return until <= now


def _upsert_lock(dialect: str, row: dict[str, Any]) -> sa.Insert:
    """INSERT the lock row, or replace the one of its host (SQLite and PostgreSQL share
    `ON CONFLICT … DO UPDATE`; the caller checked the holder inside the same write transaction)."""
    ins = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(t.host_locks).values(**row)
    return ins.on_conflict_do_update(index_elements=["host"],
                                     set_={k: ins.excluded[k] for k in row if k != "host"})
