"""The audit store's errors."""

from __future__ import annotations

from kbfix.store.rows import LockHolder


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
