"""kombu's Redis transport with two changes: unacknowledged deliveries are not pushed back into
their queue when a connection closes (`QoS.restore_at_shutdown = False`), and acking a delivery
whose connection is gone is a connection error, not an AttributeError.

Why: with Celery 5.7 / kombu 5.7, a worker that loses its Redis broker while it holds delivered,
unacknowledged messages (late-ack reads in flight) closes the broken connection twice
(`Consumer.on_connection_error_after_connected`: `collect()`, then `close()`); the second close
tries the restore again on a transport whose client is already gone, raises AttributeError
("'NoneType' object has no attribute 'hostname'" in `Channel._connparams`) and the worker dies
with "Unrecoverable error" instead of reconnecting (seen in tests/test_sites_outage.py).
Nothing is lost by not restoring: a read-only request is sent again by the controller when its
answer does not come (kbfix.sites.dispatch), and a mutating one must never run twice. Messages
left unacknowledged stay in Redis' unacked index until the transport's `visibility_timeout`.

Likewise the late ack of a read that finished while the broker was away: Celery queues it on the
worker's event loop, which runs it after the reconnect, on the old (closed) channel; kombu's
Redis QoS then fails with the same AttributeError, which Celery's `ack_log_error` does not catch
(it catches the transport's connection errors), and the worker dies (seen in
tests/test_sites_outage.py). Here such an ack raises a redis ConnectionError instead: Celery
logs "Couldn't ack" and carries on, as it does on RabbitMQ.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError


class QoS(redis.QoS):
    """Redis QoS that does not restore unacked messages on close, and whose ack/reject of a
    message delivered on a connection since lost raises a connection error (see the module
    docstring)."""

    restore_at_shutdown = False

    def _require_open(self, delivery_tag: Any) -> None:
        if getattr(self.channel, "connection", None) is None:
            raise RedisConnectionError(f"delivery {delivery_tag}: its broker connection was lost")

    def ack(self, delivery_tag: Any) -> None:
        """kombu's ack; a RedisConnectionError when the message's channel was closed with its connection."""
        self._require_open(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """kombu's reject; a RedisConnectionError when the message's channel was closed with its connection."""
        self._require_open(delivery_tag)
        super().reject(delivery_tag, requeue=requeue)


class Channel(redis.Channel):
    """Redis channel using the QoS above."""

    QoS = QoS


class Transport(redis.Transport):
    """Redis transport using the channel above (`broker_transport` of a redis:// kbfix app)."""

    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
