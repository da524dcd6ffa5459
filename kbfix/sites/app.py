"""The Celery app both sides build: broker, result backend, signed serialization, queue names.

One queue per site: `<namespace>.site.<site>` (hosts without a site: site `default`). Two
tasks, both carrying `(host name, check_mode, agent request document)`:

- `kbfix.sites.read`: read-only requests. The worker always opens its AgentSession in check
  mode, whatever the message says; late ack, so a request lost with its worker (or its broker)
  is delivered again: reading twice is harmless.
- `kbfix.sites.change`: requests carrying a mutating op. At most once: acknowledged on receipt
  (`acks_late=False`), never retried, published without kombu's publish retry, and sent with a
  short expiry so a copy that surfaces late (a prefetched message restored after a worker died)
  is discarded, not run after the controller has already reported the host `unknown`.

Result backend: the broker itself for Redis (`redis://…`). For RabbitMQ, answers travel as AMQP
messages: the worker publishes with Celery's `rpc://` backend (`kbfix.sites.replies.ReplyBackend`,
the same less its per-thread reply queue) to the task's `reply_to`, which is the controller's own
reply queue, consumed by one thread that declares it again after a broker restart
(`kbfix.sites.replies`; Celery's own rpc consumer does not survive one). Every message is
signed (`kbfix.sites.signing`).
Sources: Celery docs "Tasks" → acks_late / reject_on_worker_lost / expires
(https://docs.celeryq.dev/en/stable/userguide/tasks.html), "Configuration" → task_serializer,
accept_content, result_accept_content, security_* settings.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from celery import Celery

from kbfix.config import ConfigError
from kbfix.sites.redis_transport import TRANSPORT as REDIS_TRANSPORT
from kbfix.sites.replies import BACKEND as REPLY_BACKEND
from kbfix.sites.signing import Signing

READ_TASK = "kbfix.sites.read"
CHANGE_TASK = "kbfix.sites.change"
DEFAULT_NAMESPACE = "kbfix"
ENV_NAMESPACE = "KBFIX_BROKER_NAMESPACE"  # several kbfix deployments (or tests) on one broker
DEFAULT_SITE = "default"


class BrokerURLError(ConfigError):
    """A broker URL kbfix cannot use (the message names the URL's scheme, never its password)."""


def site_of(site: str | None) -> str:
    """The queue site of an inventory host's site (None or empty: `default`)."""
    return site or DEFAULT_SITE


def queue_name(site: str | None, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The Celery queue of one site, e.g. `kbfix.site.HQ`."""
    return f"{namespace}.site.{site_of(site)}"


def result_backend_for(broker: str) -> str:
    """`redis://…` and `rediss://…`: the same URL; `amqp://`/`pyamqp://`/`amqps://`: Celery's
    rpc backend as `kbfix.sites.replies.ReplyBackend`. Raises BrokerURLError for any other scheme."""
    scheme = urlsplit(broker).scheme.lower()
    if scheme in ("redis", "rediss"):
        return broker
    if scheme in ("amqp", "amqps", "pyamqp"):
        return REPLY_BACKEND
    raise BrokerURLError(f"broker URL scheme {scheme or '(none)'!r}: use redis://, rediss://, amqp:// or amqps://")


def make_app(broker: str, signing: Signing, *, namespace: str = DEFAULT_NAMESPACE) -> Celery:
    """A signed Celery app on `broker` (its tasks are registered by `kbfix.sites.worker` on the
    worker side; the controller sends them by name). Raises BrokerURLError, SigningError
    (missing files) and Celery's ImproperlyConfigured. `app.setup_security()` registers the
    `auth` serializer process-wide (kombu's registry is global): one identity per process."""
    signing.check()
    redis = urlsplit(broker).scheme.lower() in ("redis", "rediss")
    app = Celery(namespace, broker=broker, backend=result_backend_for(broker), set_as_current=False)
    app.conf.update(
        task_serializer="auth",
        result_serializer="auth",
        accept_content=["auth"],
        result_accept_content=["auth"],
        security_key=str(signing.key),
        security_certificate=str(signing.cert),
        security_cert_store=signing.store,
        security_digest="sha256",
        task_default_queue=f"{namespace}.default",
        control_exchange=f"{namespace}.control",
        worker_prefetch_multiplier=1,
        # No "reduce the prefetch count after a reconnect, restore it as tasks finish" (Celery 5.3,
        # celery/celery#7350): with the threads pool the restoring `basic.qos` runs in the pool
        # thread that acked, on the connection the event loop reads from; py-amqp connections are
        # not thread-safe (celery/celery#6414), and after a RabbitMQ restart the worker's event loop
        # span in a half-read frame, consuming nothing and answering no roll call (seen in
        # tests/test_sites_outage.py). Off, the full prefetch (concurrency × 1) applies at once.
        worker_enable_prefetch_count_reduction=False,
        task_acks_late=False,
        broker_connection_retry_on_startup=True,
        # Surviving a broker outage (tests/test_sites_outage.py): keep reconnecting (the worker's
        # consumer retries 2, 4, 6 … s apart), store and fetch results through a short (~10 s) outage
        # (the result backend's `ensure` retry policy), and bound every socket wait so a cut link is
        # an error, not a hang. What a crash loses anyway, the controller sends again (dispatch.py).
        broker_connection_retry=True,
        broker_connection_timeout=5,
        broker_transport_options={"socket_timeout": 30, "socket_connect_timeout": 5} if redis else {},
        broker_transport=REDIS_TRANSPORT if redis else None,  # a worker that survives the outage
        result_backend_transport_options={
            "retry_policy": {"max_retries": 12, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        },
        redis_socket_timeout=30,
        redis_socket_connect_timeout=5,
        result_expires=3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.setup_security()
    return app
