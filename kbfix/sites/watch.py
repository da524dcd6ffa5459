"""The controller's view of the broker's life: is it up, and has it been lost since a given moment?

Why: a broker that crashes and comes back (or whose connection is cut) may have lost every
queued message, unacked delivery and stored result, and the clients' libraries reconnect
silently (Celery's result consumer re-subscribes, kombu's producer revives its connection), so
the controller cannot learn from a missing exception that an answer will never come. The
`epoch` says it instead: it grows each time the broker is found again after it was lost, or
found to be a different incarnation. A read-only request sent in an older epoch may have been
lost and is sent again (reading twice is harmless); a mutating one never is (its host becomes
`unknown`).

How the incarnation is read, on one long-lived kombu connection of the watch's own: Redis
(`redis://`, `rediss://`): `INFO server` → `run_id`, which a restarted server draws afresh
(https://redis.io/docs/latest/commands/info/). AMQP: the connection itself; a broker restart or
a cut link closes it, and the next probe opens a new one (RabbitMQ has no server incarnation id
in its handshake).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerState:
    """One look at the broker. `up`: the last probe reached it; `seen_up`: some probe ever did
    (a broker never reached is a configuration error, not an outage); `epoch`: grows on every
    comeback (see the module docstring); `back_since`: monotonic seconds when the current
    incarnation was first reached after a loss (None before any loss)."""

    up: bool
    seen_up: bool
    epoch: int
    back_since: float | None


class BrokerWatch:
    """Probes the broker at `url` at most once per `probe_s` seconds (each probe bounded by
    `timeout_s`); thread-safe: every waiting host shares the one cached look."""

    def __init__(self, url: str, *, probe_s: float = 1.0, timeout_s: float = 2.0,
                 connect: Callable[[], Any] | None = None) -> None:
        self.url = url
        # The watch's own kombu connection: the app's (`app.connection_for_write(heartbeat=0)`), so
        # TLS (`broker_use_ssl`) and transport options are the ones Celery uses; else a plain one.
        self._connect = connect or (lambda: _plain_connection(url, timeout_s))
        self.probe_s = probe_s
        self.timeout_s = timeout_s
        self._redis = urlsplit(url).scheme.lower() in ("redis", "rediss")
        self._lock = threading.Lock()
        self._state = BrokerState(up=False, seen_up=False, epoch=0, back_since=None)
        self._probed_at: float | None = None
        self._identity: str | None = None
        self._lost = False
        self._client: Any = None  # a kombu Connection, opened on first probe
        self._serial = 0  # how many watch connections were opened (AMQP: the incarnation)

    def lost(self) -> None:
        """A caller saw a broker connection error: probe afresh next time, and count the next
        successful probe as a comeback (answers may have been lost meanwhile)."""
        with self._lock:
            self._lost = True
            self._probed_at = None

    def state(self) -> BrokerState:
        """The broker's state, probed when the cached look is older than `probe_s`."""
        with self._lock:
            now = time.monotonic()
            if self._probed_at is not None and now - self._probed_at < self.probe_s:
                return self._state
            try:
                identity = self._probe()
            except Exception as exc:  # any failure to reach the broker is an outage
                if self._state.up:
                    log.debug("broker lost: %s: %s", type(exc).__name__, exc)
                self._close()
                self._lost = True
                self._state = BrokerState(False, self._state.seen_up, self._state.epoch, self._state.back_since)
            else:
                epoch, back = self._state.epoch, self._state.back_since
                if self._identity is not None and (self._lost or identity != self._identity):
                    epoch, back = epoch + 1, time.monotonic()
                    log.debug("broker back (%s): epoch %d", identity, epoch)
                self._identity, self._lost = identity, False
                self._state = BrokerState(True, True, epoch, back)
            self._probed_at = time.monotonic()
            return self._state

    def close(self) -> None:
        """Close the watch's own connection."""
        with self._lock:
            self._close()

    def _probe(self) -> str:
        if self._client is None:
            conn = self._connect()
            conn.ensure_connection(max_retries=0, timeout=self.timeout_s)  # one attempt: the caller polls
            self._client, self._serial = conn, self._serial + 1
        if self._redis:  # the Redis client of the kombu channel (honours broker_use_ssl)
            return str(self._client.default_channel.client.info("server")["run_id"])
        try:  # nothing is consumed on this connection: a timeout means it is alive
            self._client.drain_events(timeout=0.01)
        except TimeoutError:
            pass
        return f"amqp-connection-{self._serial}"

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: S110 - closing a connection that is already broken
                pass


def _plain_connection(url: str, timeout_s: float) -> Any:
    from kombu import Connection

    return Connection(url, connect_timeout=timeout_s, heartbeat=0)
