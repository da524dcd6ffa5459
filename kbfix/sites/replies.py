"""The controller's answer path on RabbitMQ (AMQP): one reply queue per Dispatcher, consumed by one
thread of its own that declares the queue again on every reconnection.

Why not Celery's `rpc://` result consumer: it is per thread (`app.backend` is thread-local; the
reply queue is named after `app.thread_oid`), and after a broker restart it stops delivering
answers: its reply queue (auto-delete) is gone with the broker and its consumer is re-created
without declaring the queue again (Celery's rpc backend `Consumer.auto_declare = False`), so the
workers' replies are dropped by the broker and the waiting threads hear nothing. Upstream:
celery/celery#6912 "Celery producer with rpc backend cannot fetch results when rabbitmq is
restarted" (open), celery/celery#6414 "Celery backends are not thread-safe" and PR #8058
(`result_backend_thread_safe`).

How the answers still come through Celery's own worker: a task is published with `reply_to` =
this queue and task id = correlation id; the worker's rpc backend publishes its result to the
default exchange (`Exchange('')`: routed straight to the queue of that name) with routing key
`reply_to` and `correlation_id` = the task id, serialized with the signed `auth` serializer
(`celery/backends/rpc.py`: `RPCBackend.store_result`, `destination_for`, `_create_exchange`).
The queue is declared as Celery declares its own (durable, auto-delete, `x-expires` =
`result_expires`), by the consumer on every (re)connection and by the controller before every
publish, so a worker's answer always finds it. An answer published while the queue was gone (the
broker restarted) is lost: the consumer reports every lost connection to the BrokerWatch
(`on_lost`), so read-only requests are sent again and a mutating one ends `unknown`
(`kbfix.sites.dispatch`). Messages are decoded with kombu's registry restricted to `auth`: an
unsigned or foreign reply is dropped, never delivered.
Sources: kombu "Consumer mixin" (https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.mixins.html),
Celery "Result backends → RPC" (https://docs.celeryq.dev/en/stable/userguide/tasks.html#rpc-result-backend-rabbitmq-qpid).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery, states
from celery.backends.rpc import RPCBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu import Connection, Consumer, Exchange, Queue
from kombu.mixins import ConsumerMixin

log = logging.getLogger(__name__)

BACKEND = f"{__name__}:ReplyBackend"  # the result backend of an AMQP kbfix app


class ReplyBackend(RPCBackend):
    """Celery's rpc backend, less the per-thread reply queue it declares before each task sent:
    kbfix's controller declares its own reply queue (`ReplyQueue.declare`) and names it in
    `reply_to`. The worker side uses it unchanged (`store_result` publishes to `reply_to`)."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Declare nothing (Celery's declares `app.thread_oid`'s queue, which kbfix never reads)."""
        return None


class AnswerLost(Exception):
    """A task whose final state is not a success (e.g. the worker could not store its answer
    during a broker outage): what `Reply.get` returns in place of the answer, as Celery's
    `AsyncResult.get(propagate=False)` returns the exception of a failed task."""


class Reply:
    """The awaited answer of one published task (the subset of Celery's AsyncResult that
    `kbfix.sites.dispatch` uses: `id`, `ready()`, `get(timeout=…)`, `forget()`)."""

    def __init__(self, task_id: str, owner: ReplyQueue) -> None:
        self.id = task_id
        self._owner = owner
        self._done = threading.Event()
        self._value: Any = None

    def _set(self, value: Any) -> None:
        self._value = value
        self._done.set()

    def ready(self) -> bool:
        """True once the final state arrived."""
        return self._done.is_set()

    def get(self, timeout: float, **_: Any) -> Any:
        """The task's return value (or an AnswerLost for a failed task), waiting at most `timeout`
        seconds; raises celery.exceptions.TimeoutError, like AsyncResult.get. Other keyword
        arguments (`propagate`, `disable_sync_subtasks`) are accepted and ignored."""
        if not self._done.wait(timeout):
            raise CeleryTimeoutError(f"no answer to task {self.id} within {timeout:g} s")
        return self._value

    def forget(self) -> None:
        """Stop waiting for this task: a late answer is dropped."""
        self._owner.discard(self.id)


class ReplyQueue(ConsumerMixin):
    """The reply queue `name` on `app`'s broker and the thread that consumes it (started by
    `start()`, before each publish; stopped by `close()`, or of itself once nothing was awaited
    for `idle_s` seconds, so a controller that never calls close() leaves no thread polling the
    broker). `on_lost()` is called whenever the consumer's connection fails (answers may have
    been lost with it); `retry_s` between connection attempts. Thread-safe."""

    def __init__(self, app: Celery, name: str, *, on_lost: Callable[[], None] = lambda: None,
                 retry_s: float = 0.5, idle_s: float = 60.0) -> None:
        self.app = app
        self.name = name
        self.on_lost = on_lost
        self.retry_s = retry_s
        self.idle_s = idle_s
        self.queue = Queue(name, Exchange(""), routing_key=name, durable=True, auto_delete=True,
                           expires=float(app.conf.result_expires or 3600))
        self.connection: Connection = app.connection_for_read()
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # one start() at a time: the retired thread is joined once
        self._waiting: dict[str, Reply] = {}
        self._thread: threading.Thread | None = None  # the consuming thread (None: none, or retiring)
        self._retired: threading.Thread | None = None  # the last thread told to stop when idle
        self._closed = False
        self._used_at = time.monotonic()  # last expect/answer/forget: the idle clock
        self.consuming = threading.Event()  # set while the consumer is subscribed
        self.revivals = 0  # connections the consumer opened (tests: > 1 after an outage)
        self.dropped = 0  # replies that no one waited for, or that failed to decode

    # -- the waiting side -------------------------------------------------------------------

    def expect(self, task_id: str) -> Reply:
        """Register a Reply for `task_id` before the task is published (an answer may be fast)."""
        reply = Reply(task_id, self)
        with self._lock:
            self._waiting[task_id] = reply
            self._used_at = time.monotonic()
        return reply

    def discard(self, task_id: str) -> None:
        """Forget `task_id` (a late answer is dropped)."""
        with self._lock:
            self._waiting.pop(task_id, None)
            self._used_at = time.monotonic()

    def declare(self, producer: Any) -> None:
        """Declare the reply queue on `producer`'s connection (a few retries; the producer is
        revived on a new connection when its old one is dead). Raises kombu/amqp connection or
        channel errors when the broker does not take it."""
        def _declare() -> None:
            self.queue(producer.channel).declare()

        producer.connection.ensure(producer, _declare, max_retries=2, interval_start=0, interval_step=0.5,
                                   interval_max=1)()

    # -- the consuming thread ---------------------------------------------------------------

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        """ConsumerMixin's stop flag (polled about once a second): true in any thread but the
        current consuming one, so a retired thread winds down while a new one consumes."""
        return self._closed or threading.current_thread() is not self._thread

    def running(self) -> bool:
        """True while a consuming thread is designated (it may still be connecting)."""
        with self._lock:
            return self._thread is not None

    def start(self) -> None:
        """Make sure a consumer thread runs (a daemon: a controller that exits does not wait).
        A thread that retired when idle is joined first: its consumer's cancel would delete the
        auto-delete queue under a new one's declaration. Raises RuntimeError after close()."""
        with self._start_lock:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"reply queue {self.name} is closed")
                if self._thread is not None:
                    return
                retired, self._retired = self._retired, None
            if retired is not None:
                retired.join(10)
            with self._lock:
                self._used_at = time.monotonic()
                self._thread = threading.Thread(target=self._run, name=f"kbfix-replies-{self.name}", daemon=True)
                self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop consuming (the queue, auto-delete, goes with the consumer) and join the thread."""
        with self._lock:
            self._closed = True
            threads = [t for t in (self._thread, self._retired) if t is not None]
            self._thread = None
        for thread in threads:
            thread.join(timeout_s)

    def _retire_if_idle(self) -> None:
        """Called by the consuming thread: stop when nothing was awaited for `idle_s` seconds."""
        with self._lock:
            if (self._thread is threading.current_thread() and not self._waiting
                    and time.monotonic() - self._used_at >= self.idle_s):
                self._retired, self._thread = self._thread, None
                log.debug("reply consumer %s: idle for %g s; stopping", self.name, self.idle_s)

    def on_iteration(self) -> None:
        """Each consume loop turn (about once a second): retire when idle."""
        self._retire_if_idle()

    def _run(self) -> None:
        while not self.should_stop:
            try:
                self.run()  # ConsumerMixin: reconnects on connection and channel errors
            except _Stopped:
                return
            except Exception:  # anything else: start over on a new connection, never die
                log.warning("reply consumer %s failed; reconnecting", self.name, exc_info=True)
                self._lost()
                time.sleep(self.retry_s)

    def _lost(self) -> None:
        self.consuming.clear()
        try:
            self.on_lost()
        except Exception:  # noqa: S110 - the watch's bookkeeping must not stop the consumer
            pass

    def establish_connection(self) -> Any:
        """A fresh connection, retried every `retry_s` (not Celery's 2, 4, 6 … s: answers wait)."""
        return _established(self)

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        """Called for each failed connection attempt: stop when closing or idle, else retry quietly."""
        self._retire_if_idle()
        if self.should_stop:
            raise _Stopped()
        log.debug("reply consumer %s: broker unreachable (%s); retrying", self.name, exc)

    def on_connection_revived(self) -> None:
        """Count the connection (the queue is declared again by the new consumer)."""
        self.revivals += 1
        log.debug("reply consumer %s: connected (%d)", self.name, self.revivals)

    def get_consumers(self, consumer_cls: Any, channel: Any) -> list[Consumer]:
        """One consumer of the reply queue, declaring it (auto_declare), accepting signed replies only."""
        return [consumer_cls(queues=[self.queue], callbacks=[self._on_reply], accept=["auth"], no_ack=True)]

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        """Subscribed: answers flow again."""
        self.consuming.set()

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Unsubscribed (closing or retiring)."""
        self.consuming.clear()

    def consume(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """ConsumerMixin.consume, reporting a lost connection to `on_lost` before reconnecting."""
        try:
            yield from super().consume(*args, **kwargs)
        except _Stopped:
            raise
        except Exception:
            if not self.should_stop:
                self._lost()
            raise

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """An unsigned, foreign or corrupt reply: dropped (logged without its body)."""
        self.dropped += 1
        log.warning("reply consumer %s: dropped a reply that failed to decode: %s", self.name, exc)

    def _on_reply(self, body: Any, message: Any) -> None:
        meta = body if isinstance(body, dict) else {}
        task_id = message.properties.get("correlation_id") or meta.get("task_id")
        status = meta.get("status")
        if status not in states.READY_STATES:
            return  # STARTED, RETRY …: not the answer
        with self._lock:
            reply = self._waiting.pop(str(task_id), None)
            self._used_at = time.monotonic()
        if reply is None:
            self.dropped += 1  # a copy already answered, or forgotten
            log.debug("reply consumer %s: reply to %s (%s) dropped: no one waits for it", self.name, task_id, status)
            return
        log.debug("reply consumer %s: reply to %s (%s)", self.name, task_id, status)
        if status == states.SUCCESS:
            reply._set(meta.get("result"))
        else:
            detail = meta.get("result")
            what = (f"{detail.get('exc_type')}: {detail.get('exc_message')}" if isinstance(detail, dict)
                    else str(detail))
            reply._set(AnswerLost(f"task {status}: {what}"))


class _Stopped(Exception):
    """Raised inside the consumer's connection retries once `close()` was called."""


class _established:
    """Context manager: ConsumerMixin.establish_connection with `retry_s` between attempts."""

    def __init__(self, owner: ReplyQueue) -> None:
        self.owner = owner
        self.conn: Connection | None = None

    def __enter__(self) -> Connection:
        self.owner._retire_if_idle()  # every (re)connection passes here, even one refused at once
        if self.owner.should_stop:
            raise _Stopped()
        self.conn = self.owner.connection.clone()
        step = self.owner.retry_s
        self.conn.ensure_connection(self.owner.on_connection_error, None, interval_start=step, interval_step=0,
                                    interval_max=step)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            try:
                self.conn.release()
            except Exception:  # noqa: S110 - releasing a connection that is already broken
                pass
