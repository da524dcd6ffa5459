"""A PostgreSQL store whose connection is lost: the server restarted or failed over, a
network device dropped an idle session, or an administrator ended it (`pg_terminate_backend`).

Before, the store kept its one connection for the whole run: after a restart of a shared
PostgreSQL every later write failed, though the server was back. Now the store opens a new
connection (tried for up to `RECONNECT_S` seconds while the server comes back) and carries on;
nothing is stored twice and nothing half:

- lost between transactions (the common case: a run waits minutes for an installer while its
  connection is idle): the next transaction, or read, starts on a new connection;
- lost inside a write transaction: PostgreSQL rolls back a transaction whose session ends
  (PostgreSQL documentation, "Server Signaling Functions": pg_terminate_backend ends the session;
  an uncommitted transaction is never visible). The write fails (StoreError: nothing of it
  stored) and is not replayed statement by statement as a full SQLite disk's is: its rows carry
  keys from sequences (findings → host_results.seq), which a rollback does not give back
  (postgresql.org/docs/current/functions-sequence.html: "the value obtained by nextval is not
  reclaimed for re-use if the calling transaction later aborts"), so replayed rows would point at
  keys that were never stored. The store's callers keep what they could not write (a check's
  deferred rows stay deferred) and the next transaction reconnects;
- lost at COMMIT: whether the server committed is unknown, and the store says so (StoreError).

SQLite has no connection to lose: its store never reconnects.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
import tenacity

#: Seconds a lost PostgreSQL connection is tried again before the store gives up (StoreError):
#: long enough for a restart or a managed failover, short enough for a change window.
RECONNECT_S = 30.0


def connection_lost(exc: BaseException) -> bool:
    """True when `exc` is SQLAlchemy's word that the database connection is gone
    (`DBAPIError.connection_invalidated`: the dialect recognised a disconnect, e.g. psycopg's
    AdminShutdown 57P01, a closed socket or a server that went away)."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def discard(db: sa.Connection) -> None:
    """Close a connection that is gone (its errors are about the loss already reported)."""
    try:
        db.close()
        db.engine.dispose()
    except sa.exc.SQLAlchemyError:
        pass


def reconnect(connect: Callable[[], sa.Connection], within_s: float = RECONNECT_S) -> sa.Connection:
    """`connect()` until it succeeds or `within_s` seconds have passed (waits of 0.2 s doubling
    to 2 s between tries). Raises the last attempt's SQLAlchemy error."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(within_s),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
        retry=tenacity.retry_if_exception_type(sa.exc.DBAPIError),
        reraise=True,
    )
    db: sa.Connection = retrying(connect)
    return db
