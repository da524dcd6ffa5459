"""The controller's AMQP reply queue (`kbfix.sites.replies`) against the machine's RabbitMQ: a
worker's answer reaches the waiting Reply through Celery's own rpc backend code (`store_result`
to `reply_to`, correlation id = task id, signed); a failed task arrives as AnswerLost (never as an
answer); the queue deleted under the consumer (as by a broker restart) is declared again and
answers flow again, the loss being reported; an idle consumer retires and a new request starts it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu import Connection

from kbfix.sites.app import make_app
from kbfix.sites.replies import AnswerLost, ReplyQueue
from tests import sitesrig


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    with sitesrig.amqp_url() as url:
        yield make_app(url, sitesrig.identities(tmp_path).worker, namespace=sitesrig.namespace())


def _answer_as_a_worker(app: Celery, replies: ReplyQueue, task_id: str, value: Any, *, failed: bool = False) -> None:
    """Publish a task's result exactly as the site worker does (Celery's rpc backend, `reply_to`)."""
    from celery.app.task import Context

    request = Context(id=task_id, reply_to=replies.name, correlation_id=task_id, delivery_info={})
    if failed:
        app.backend.mark_as_failure(task_id, value, request=request)
    else:
        app.backend.mark_as_done(task_id, value, request=request)


def _wait(predicate: Any, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def _publish_ready(app: Celery, replies: ReplyQueue) -> None:
    """What the Dispatcher does before each publish: start the consumer, declare the queue."""
    replies.start()
    with app.producer_or_acquire() as producer:
        replies.declare(producer)


def test_a_workers_answer_and_a_failed_task_reach_their_waiters(app: Celery) -> None:
    replies = ReplyQueue(app, f"kbfixt.reply.{uuid.uuid4().hex}")
    try:
        ok, bad, late = (str(uuid.uuid4()) for _ in range(3))
        waiting = {t: replies.expect(t) for t in (ok, bad)}
        _publish_ready(app, replies)
        _wait(replies.consuming.is_set)
        _answer_as_a_worker(app, replies, ok, {"ok": True, "response": {"nonce": "n"}})
        _answer_as_a_worker(app, replies, bad, OSError("the broker went away while storing"), failed=True)
        _answer_as_a_worker(app, replies, late, {"ok": True})  # nobody waits for it: dropped
        assert waiting[ok].get(timeout=10) == {"ok": True, "response": {"nonce": "n"}}
        lost = waiting[bad].get(timeout=10)
        assert isinstance(lost, AnswerLost) and "FAILURE" in str(lost) and "OSError" in str(lost)
        _wait(lambda: replies.dropped >= 1)
        forgotten = replies.expect(str(uuid.uuid4()))
        forgotten.forget()
        with pytest.raises(CeleryTimeoutError):
            forgotten.get(timeout=0.2)
    finally:
        replies.close()


def test_the_queue_deleted_under_the_consumer_comes_back(app: Celery) -> None:
    losses: list[float] = []
    replies = ReplyQueue(app, f"kbfixt.reply.{uuid.uuid4().hex}", on_lost=lambda: losses.append(time.monotonic()))
    try:
        _publish_ready(app, replies)
        _wait(replies.consuming.is_set)
        with Connection(app.conf.broker_url, connect_timeout=5) as conn:  # as a broker restart would
            conn.default_channel.queue_delete(replies.name)
        _wait(lambda: replies.revivals >= 2 and replies.consuming.is_set())
        assert losses, "the lost consumer was not reported"
        task_id = str(uuid.uuid4())
        reply = replies.expect(task_id)
        _answer_as_a_worker(app, replies, task_id, {"ok": True})
        assert reply.get(timeout=10) == {"ok": True}
    finally:
        replies.close()


def test_an_idle_consumer_retires_and_a_new_request_starts_it(app: Celery) -> None:
    replies = ReplyQueue(app, f"kbfixt.reply.{uuid.uuid4().hex}", idle_s=0.5)
    try:
        _publish_ready(app, replies)
        _wait(replies.consuming.is_set)
        _wait(lambda: not replies.running())
        task_id = str(uuid.uuid4())
        reply = replies.expect(task_id)
        _publish_ready(app, replies)
        assert replies.running()
        _answer_as_a_worker(app, replies, task_id, {"ok": True})
        assert reply.get(timeout=10) == {"ok": True}
    finally:
        replies.close()
    assert not replies.running()
