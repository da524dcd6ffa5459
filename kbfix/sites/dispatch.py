"""The controller side: `BrokerSession` sends each agent request to the host's site queue and
waits for the worker's answer; `BrokerEngine` is the playbook engine whose per-host session is a
BrokerSession. Everything else (assessment, planning, rollout rules, the journal, reports) stays
in the controller, unchanged.

Bounded waits, never a hang:
- entering a session asks the workers which queues they consume (`inspect().active_queues()`,
  `ping_s` timeout, answers cached `liveness_ttl_s`); no worker on the site's queue →
  UnreachableError "no worker for site X" (host `unreachable`, nothing sent);
- an answer is awaited at most the agent command deadline (`remoting.session.deadline_for`) plus
  `margin_s`, in 1 s slices; a site whose workers all vanish meanwhile ends the wait early (noticed
  within `liveness_ttl_s` + `ping_s`: one roll call serves every waiting host).
A broker that was reached and then lost (crash, restart, cut link; `kbfix.sites.watch`): requests
wait up to `outage_s` for it to come back, and a site's workers get `rejoin_s` after its return to
consume again before "no worker" is concluded. A read-only request sent before the broker was
lost, unanswered within its deadline, or whose worker could not return its answer (the task
comes back failed, e.g. an OperationalError from storing it during the outage) is sent again
(at most `read_sends` copies; the first answer of any copy wins): reading twice is harmless. A
broker never reached fails at once. Answers come through Celery's result backend on Redis and
through the Dispatcher's own reply queue on RabbitMQ (`kbfix.sites.replies`).
At most once for mutating requests: published once (no publish retry), `expires` = `pickup_s`,
and any lost publish, answer or worker (a failed task included) raises OutcomeUnknownError (the
host is `unknown`, the journal holds the intent, `apply --resume` re-reads); a broker that
fails before the publish (declaring the reply queue) is UnreachableError: nothing was sent. Check mode: a mutating op in a check-mode
session raises CheckModeViolation before anything is published.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.utils.url import maybe_sanitize_url

from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.sites.app import CHANGE_TASK, ENV_NAMESPACE, READ_TASK, queue_name, site_of
from kbfix.sites.replies import ReplyQueue
from kbfix.sites.watch import BrokerState, BrokerWatch
from kbfix.sites.wire import is_answer, request_doc, response_of
from remoting.agent_protocol import AgentResponse, OpRequest
from remoting.endpoint import Timeouts
from remoting.errors import CheckModeViolation, OutcomeUnknownError, UnreachableError
from remoting.session import deadline_for

log = logging.getLogger(__name__)


class BrokerDownError(Exception):
    """The broker could not be reached for the workers' roll call (internal to this module)."""


class NotSentError(Exception):
    """The broker failed before a task was published: nothing was sent (internal to this module)."""


@dataclass(frozen=True)
class DispatchTimes:
    """Seconds: `ping_s` to wait for workers' queue lists; `liveness_ttl_s` to trust them;
    `pickup_s` a mutating request may wait in its queue before it expires unrun; `margin_s`
    added to the agent's command deadline for the answer's way back; `probe_s` between looks at
    the broker; `outage_s` a request waits for a lost broker to come back; `rejoin_s` a site's
    workers may take to consume again after the broker's return (Celery's worker reconnects
    after 2, 4, 6 … s, at most 30 s apart); `read_sends`: copies of a read-only request at most."""

    ping_s: float = 2.0
    liveness_ttl_s: float = 10.0
    pickup_s: float = 60.0
    margin_s: float = 30.0
    probe_s: float = 1.0
    outage_s: float = 60.0
    rejoin_s: float = 45.0
    read_sends: int = 3


_RESEND = object()  # _await_read's "send it again"


class Dispatcher:
    """Sends agent requests through `app` (a `kbfix.sites.app.make_app` app) to site queues.
    Thread-safe: the run's worker threads share one Dispatcher."""

    def __init__(self, app: Celery, *, namespace: str = "kbfix", times: DispatchTimes | None = None) -> None:
        self.app = app
        self.namespace = namespace
        self.times = times or DispatchTimes()
        self.watch = BrokerWatch(str(app.conf.broker_url), probe_s=self.times.probe_s,
                                 timeout_s=max(1.0, self.times.ping_s),
                                 connect=lambda: app.connection_for_write(heartbeat=0))
        self._lock = threading.Lock()
        self._served: frozenset[str] = frozenset()
        self._checked_at: float | None = None
        self.published = 0  # tasks sent (for benchmarks and tests)
        self.resent = 0  # read-only copies sent again after an outage or a missing answer
        # AMQP: answers come back on one reply queue of this dispatcher's own (kbfix.sites.replies:
        # Celery's per-thread rpc:// consumer does not survive a broker restart); Redis: Celery's
        # result backend in the broker (AsyncResult), which does.
        self.replies: ReplyQueue | None = None
        if urlsplit(str(app.conf.broker_url)).scheme.lower() in ("amqp", "amqps", "pyamqp"):
            self.replies = ReplyQueue(app, f"{namespace}.reply.{uuid.uuid4().hex}", on_lost=self.watch.lost)

    def close(self) -> None:
        """Stop the reply consumer (AMQP) and close the broker watch's connection."""
        if self.replies is not None:
            self.replies.close()
        self.watch.close()

    def served_queues(self, *, fresh: bool = False) -> frozenset[str]:
        """The queues live workers consume (one broadcast per `liveness_ttl_s` at most).
        Raises BrokerDownError when the broadcast could not be sent (nothing is cached then)."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._checked_at is None or now - self._checked_at > self.times.liveness_ttl_s:
                before = self.watch.state()
                try:
                    replies = self.app.control.inspect(timeout=self.times.ping_s).active_queues() or {}
                except Exception as exc:  # the broker itself: no answer says anything about workers
                    self._checked_at = None
                    self.watch.lost()
                    raise BrokerDownError(f"the broker did not take the workers' roll call: {type(exc).__name__}: "
                                          f"{exc}") from exc
                after = self.watch.state()
                if not (before.up and after.up and before.epoch == after.epoch):
                    # The broker was lost during the roll call: silence says nothing about workers.
                    self._checked_at = None
                    raise BrokerDownError("the broker was lost during the workers' roll call")
                self._served = frozenset(
                    str(q["name"]) for queues in replies.values() for q in (queues or [])
                    if isinstance(q, dict) and q.get("name")
                )
                self._checked_at = time.monotonic()
            return self._served

    def _broker_up(self, host: str, until: float) -> BrokerState:
        """The broker's state once it is up, waiting (in `probe_s` steps) while a broker that was
        reached before is down, until `until` (monotonic). Raises UnreachableError for a broker
        never reached, or still down at `until`."""
        while True:
            state = self.watch.state()
            if state.up:
                return state
            if not state.seen_up:
                raise UnreachableError(f"the broker did not answer at {maybe_sanitize_url(self.watch.url)}", host=host)
            if time.monotonic() >= until:
                raise UnreachableError(f"the broker has been unreachable for over {self.times.outage_s:g} s", host=host)
            time.sleep(self.times.probe_s)

    def _rejoining(self, state: BrokerState) -> bool:
        """True while the broker came back less than `rejoin_s` ago (workers may still reconnect)."""
        return state.back_since is not None and time.monotonic() - state.back_since < self.times.rejoin_s

    def require_worker(self, site: str | None, *, host: str, fresh: bool = False) -> None:
        """Raise UnreachableError "no worker for site X" unless a live worker consumes the site's
        queue (UnreachableError naming the broker when it cannot be asked). Bounded: a lost
        broker is awaited `outage_s`, a site's workers `rejoin_s` after the broker's return."""
        until = time.monotonic() + self.times.outage_s
        while True:
            self._broker_up(host, until)
            try:
                served = self.served_queues(fresh=fresh)
            except BrokerDownError as exc:
                if not self.watch.state().seen_up or time.monotonic() >= until:
                    raise UnreachableError(str(exc), host=host) from exc
                continue
            name = queue_name(site, self.namespace)
            if name in served:
                return
            if not self._rejoining(self.watch.state()):  # looked at after the roll call, which may wait
                raise UnreachableError(f"no worker for site {site_of(site)}", host=host)
            time.sleep(self.times.probe_s)  # the broker is back since moments: its workers may still reconnect
            fresh = True

    def send(self, host: str, site: str | None, ops: Sequence[OpRequest], *, check_mode: bool,
             command_s: float) -> AgentResponse:
        """One agent request for `host` through its site's worker; the decoded response.

        Raises CheckModeViolation (nothing published), UnreachableError (no worker, broker down,
        no answer to a read-only request after `read_sends` copies), OutcomeUnknownError (a
        mutating request whose publish, answer or worker was lost), and every remoting error the
        worker reports."""
        mutating = tuple(o.id for o in ops if o.mutating)
        if mutating and check_mode:
            raise CheckModeViolation(
                f"check mode: refusing to dispatch mutating op(s) {', '.join(mutating)}; nothing was sent", host=host)
        doc = request_doc(ops)  # ValueError on duplicate ids, before anything is sent
        wait_s = deadline_for(ops, command_s) + self.times.margin_s
        if mutating:
            answer = self._send_change(host, site, doc, mutating, check_mode, wait_s)
        else:
            answer = self._send_read(host, site, doc, wait_s)
        return response_of(answer, host=host)

    def _publish(self, task: str, host: str, site: str | None, doc: str, check_mode: bool, *, mutating: bool,
                 expires: float) -> Any:
        """Publish one task; its awaited result (Celery's AsyncResult, or a `replies.Reply` on AMQP).
        Raises NotSentError when the broker failed before the publish (AMQP: declaring the reply
        queue), and the broker's errors from the publish itself."""
        options: dict[str, Any] = dict(
            args=[host, check_mode, doc], queue=queue_name(site, self.namespace), expires=expires,
            retry=not mutating,  # a mutating message is published once: a retried publish could run twice
        )
        if self.replies is None:
            result = self.app.send_task(task, **options)
            self.published += 1
            return result
        self.replies.start()
        task_id = str(uuid.uuid4())
        reply = self.replies.expect(task_id)  # before the publish: an answer may come at once
        try:
            with self.app.producer_or_acquire() as producer:
                try:  # the queue the worker answers to must exist when it answers (it is gone after a restart)
                    self.replies.declare(producer)
                except Exception as exc:
                    raise NotSentError(f"{type(exc).__name__}: {exc}") from exc
                self.app.send_task(task, task_id=task_id, reply_to=self.replies.name, producer=producer, **options)
        except BaseException:
            reply.forget()
            raise
        self.published += 1
        return reply

    def _send_change(self, host: str, site: str | None, doc: str, mutating: tuple[str, ...], check_mode: bool,
                     wait_s: float) -> Any:
        site_name = site_of(site)

        def lost(why: str) -> Exception:
            return OutcomeUnknownError(
                f"the request carrying {', '.join(mutating)} went to site {site_name}'s queue and {why}; "
                "re-read the host's state to learn the outcome", host=host, op_ids=mutating)

        self._broker_up(host, time.monotonic() + self.times.outage_s)  # nothing sent yet: waiting is safe
        try:
            result = self._publish(CHANGE_TASK, host, site, doc, check_mode, mutating=True,
                                   expires=self.times.pickup_s)
        except NotSentError as exc:
            self.watch.lost()
            raise UnreachableError(f"site {site_name}: the broker failed before the request was sent ({exc}); "
                                   "nothing was sent", host=host) from exc
        except Exception as exc:
            raise lost(f"the broker failed: {type(exc).__name__}: {exc}") from exc
        try:
            return self._wait_change(result, site, wait_s, lost)
        finally:
            _forget(result)

    def _wait_change(self, result: Any, site: str | None, wait_s: float, lost: Any) -> Any:
        end = time.monotonic() + wait_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise lost(f"no answer came within {wait_s:g} s")
            try:
                answer = result.get(timeout=min(1.0, left), propagate=False, disable_sync_subtasks=False)
            except CeleryTimeoutError:
                pass
            except Exception as exc:
                self.watch.lost()
                raise lost(f"its answer was lost: {type(exc).__name__}: {exc}") from exc
            else:
                if not is_answer(answer):  # e.g. the worker could not store its answer: the change may have run
                    raise lost(f"its answer was lost ({_what(answer)})")
                return answer
            try:
                served = self.served_queues()  # cached: one roll call per liveness_ttl_s for every waiting host
            except BrokerDownError:
                continue  # a broker blip says nothing about the worker: wait on, up to the deadline
            if queue_name(site, self.namespace) not in served:
                raise lost("no worker for the site is left")

    def _send_read(self, host: str, site: str | None, doc: str, wait_s: float) -> Any:
        """Send a read-only request (again after an outage, a missing answer or a copy whose
        answer was lost) until an answer comes; bounded by `read_sends` × (`wait_s` + `outage_s`)."""
        copies: list[Any] = []  # copies that may still answer, oldest first
        spent: list[Any] = []  # copies whose answer was lost (a failed task: nothing more will come)
        why = ""
        try:
            for sent in range(max(1, self.times.read_sends)):
                epoch = self._publish_read(host, site, doc, wait_s, copies)
                if sent:
                    self.resent += 1
                answer = self._await_read(host, site, copies, spent, wait_s, epoch)
                if is_answer(answer):
                    return answer
                log.debug("%s: read copy %d: %s", host, len(copies) + len(spent),
                          "resend" if answer is _RESEND else _what(answer))
                if answer is not _RESEND:
                    why = f"a worker's answer was lost ({_what(answer)})"
                elif self.watch.state().epoch != epoch:
                    why = "the broker was lost"
                else:
                    why = f"no answer within {wait_s:g} s"
            raise UnreachableError(f"site {site_of(site)}: {why} ({len(copies) + len(spent)} copies of the request "
                                   "sent)", host=host)
        finally:
            for result in copies + spent:
                _forget(result)

    def _publish_read(self, host: str, site: str | None, doc: str, wait_s: float, copies: list[Any]) -> int:
        """Publish one copy (appended to `copies`); the broker epoch it went out in."""
        until = time.monotonic() + self.times.outage_s
        while True:
            state = self._broker_up(host, until)
            try:
                copies.append(self._publish(READ_TASK, host, site, doc, True, mutating=False, expires=wait_s))
            except Exception as exc:
                self.watch.lost()  # the next look probes afresh: a broker still down ends in _broker_up
                if time.monotonic() >= until and self.watch.state().up:
                    raise UnreachableError(f"site {site_of(site)}: the broker failed: {type(exc).__name__}: {exc}",
                                           host=host) from exc
                time.sleep(self.times.probe_s)
                continue
            log.debug("%s: read copy %d published as %s (epoch %d)", host, len(copies), copies[-1].id, state.epoch)
            return state.epoch

    def _await_read(self, host: str, site: str | None, copies: list[Any], spent: list[Any], wait_s: float,
                    epoch: int) -> Any:
        """The first kbfix answer of any copy; else the value of the newest copy when it is not
        one (its answer was lost: the copy moves to `spent`), or _RESEND when the broker was lost
        since `epoch` (and is back) or `wait_s` passed. Raises UnreachableError when the site's
        workers are gone."""
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            for result in copies[:-1]:  # an older copy may still answer
                try:
                    if result.ready():
                        value = result.get(timeout=1.0, propagate=False, disable_sync_subtasks=False)
                        if is_answer(value):
                            return value
                        copies.remove(result)
                        spent.append(result)
                except Exception:
                    self.watch.lost()
            try:
                value = copies[-1].get(timeout=max(0.05, min(1.0, end - time.monotonic())), propagate=False,
                                       disable_sync_subtasks=False)
            except CeleryTimeoutError:
                pass
            except Exception:  # the result backend's connection: the answer may be lost
                self.watch.lost()
                time.sleep(min(self.times.probe_s, 1.0))
            else:
                if not is_answer(value):  # e.g. the worker could not store its answer in the outage
                    spent.append(copies.pop())
                return value
            state = self.watch.state()
            if not state.up:
                continue  # the broker is away: wait on (the publish of the next copy waits for it)
            if state.epoch != epoch:
                return _RESEND  # the broker was lost after this copy went out: it may be gone with it
            try:
                served = self.served_queues()
            except BrokerDownError:
                continue
            state = self.watch.state()  # look again: the roll call may have waited for another's
            if state.up and state.epoch != epoch:
                return _RESEND
            if queue_name(site, self.namespace) not in served and not self._rejoining(state):
                raise UnreachableError(f"site {site_of(site)}: no worker for the site is left", host=host)
        return _RESEND


def _what(value: object) -> str:
    """A short description of a task value that is not a kbfix answer (a failed task's exception)."""
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"[:300]
    return f"a {type(value).__name__}, not a kbfix answer"


def _forget(result: Any) -> None:
    try:
        result.forget()
    except Exception:  # noqa: S110 - only tidying the result backend
        pass


class BrokerSession:
    """The per-host session of a broker run (same interface as AgentSession: a context manager
    whose `run(ops)` returns an AgentResponse). Entering it checks that the site has a live
    worker (UnreachableError "no worker for site X"); it holds no connection of its own."""

    def __init__(self, dispatcher: Dispatcher, host: Any, *, check_mode: bool) -> None:
        self.dispatcher = dispatcher
        self.host = host
        self.check_mode = check_mode
        endpoint = getattr(host, "endpoint", None)
        self.command_s = endpoint.timeouts.command if endpoint is not None else Timeouts().command
        self._unknown: OutcomeUnknownError | None = None

    def __enter__(self) -> BrokerSession:
        self.dispatcher.require_worker(self.host.site, host=self.host.name)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def run(self, ops: Sequence[OpRequest], *, deadline_s: float | None = None) -> AgentResponse:
        """Send `ops` as one request to the host's site worker (see `Dispatcher.send`).

        Once a change's outcome was lost in this session, a later request that cannot reach the
        host (the verify after a lost worker) raises OutcomeUnknownError too, so the host is
        reported `unknown` (the journal already says which action), not merely `unreachable`."""
        try:
            return self.dispatcher.send(self.host.name, self.host.site, ops, check_mode=self.check_mode,
                                        command_s=deadline_s if deadline_s is not None else self.command_s)
        except OutcomeUnknownError as exc:
            self._unknown = exc
            raise
        except UnreachableError as exc:
            if self._unknown is None:
                raise
            raise OutcomeUnknownError(f"{exc.message}; and the outcome of {', '.join(self._unknown.op_ids)} "
                                      "is unknown: re-read the host (apply --resume)", host=self.host.name,
                                      op_ids=self._unknown.op_ids) from exc


class BrokerEngine(PlaybookEngine):
    """The playbook engine with every per-host session a BrokerSession on `dispatcher`."""

    def __init__(self, dispatcher: Dispatcher, ids: Sequence[str] | None = None, *, extra_dirs: Sequence[Path] = (),
                 packages_dir: Path | None = None) -> None:
        super().__init__(ids, extra_dirs=extra_dirs, packages_dir=packages_dir)
        self.dispatcher = dispatcher

    def session(self, host: Any, *, check_mode: bool) -> Any:
        """A BrokerSession for the host (use as a context manager)."""
        return BrokerSession(self.dispatcher, host, check_mode=check_mode)


def broker_engine(broker: str, *, packages_dir: Path | None = None, extra_dirs: Sequence[Path] = (),
                  namespace: str = "kbfix", times: DispatchTimes | None = None) -> BrokerEngine:
    """The controller's engine for `--broker URL`: signing material from KBFIX_SIGN_KEY /
    KBFIX_SIGN_CERT / KBFIX_SIGN_STORE, queue namespace from KBFIX_BROKER_NAMESPACE (else `namespace`). Raises SigningError / BrokerURLError (usage errors, exit 2)."""
    from kbfix.sites.app import make_app
    from kbfix.sites.signing import Signing

    namespace = os.environ.get(ENV_NAMESPACE) or namespace
    app = make_app(broker, Signing.from_env(), namespace=namespace)
    return BrokerEngine(Dispatcher(app, namespace=namespace, times=times), extra_dirs=extra_dirs,
                        packages_dir=packages_dir)
