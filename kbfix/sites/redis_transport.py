"""kombu's Redis transport with one change: unacknowledged deliveries are not pushed back into
their queue when a connection closes (`QoS.restore_at_shutdown = False`).

Why: with Celery 5.7 / kombu 5.7, a worker that loses its Redis broker while it holds delivered,
unacknowledged messages (late-ack reads in flight) closes the broken connection twice
(`Consumer.on_connection_error_after_connected`: `collect()`, then `close()`); the second close
tries the restore again on a transport whose client is already gone, raises AttributeError
("'NoneType' object has no attribute 'hostname'" in `Channel._connparams`) and the worker dies
with "Unrecoverable error" instead of reconnecting (seen in tests/test_sites_outage.py).
Nothing is lost by not restoring: a read-only request is sent again by the controller when its
answer does not come (kbfix.sites.dispatch), and a mutating one must never run twice. Messages
left unacknowledged stay in Redis' unacked index until the transport's `visibility_timeout`.
"""

from __future__ import annotations

from kombu.transport import redis


class QoS(redis.QoS):
    """Redis QoS that does not restore unacked messages on close (see the module docstring)."""

    restore_at_shutdown = False


class Channel(redis.Channel):
    """Redis channel using the QoS above."""

    QoS = QoS


class Transport(redis.Transport):
    """Redis transport using the channel above (`broker_transport` of a redis:// kbfix app)."""

    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
