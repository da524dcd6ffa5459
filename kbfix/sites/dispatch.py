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
At most once for mutating requests: published once (no publish retry), `expires` = `pickup_s`,
and any lost publish, answer or worker raises OutcomeUnknownError (the host is `unknown`, the
journal holds the intent, `apply --resume` re-reads). Check mode: a mutating op in a check-mode
session raises CheckModeViolation before anything is published.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError

from kbfix.engine import PlaybookEngine
from kbfix.sites.app import CHANGE_TASK, ENV_NAMESPACE, READ_TASK, queue_name, site_of
from kbfix.sites.wire import request_doc, response_of
from remoting.agent_protocol import AgentResponse, OpRequest
from remoting.endpoint import Timeouts
from remoting.errors import CheckModeViolation, OutcomeUnknownError, UnreachableError
from remoting.session import deadline_for


class BrokerDownError(Exception):
    """The broker could not be reached for the workers' roll call (internal to this module)."""


@dataclass(frozen=True)
class DispatchTimes:
    """Seconds: `ping_s` to wait for workers' queue lists; `liveness_ttl_s` to trust them;
    `pickup_s` a mutating request may wait in its queue before it expires unrun; `margin_s`
    added to the agent's command deadline for the answer's way back."""

    ping_s: float = 2.0
    liveness_ttl_s: float = 10.0
    pickup_s: float = 60.0
    margin_s: float = 30.0


class Dispatcher:
    """Sends agent requests through `app` (a `kbfix.sites.app.make_app` app) to site queues.
    Thread-safe: the run's worker threads share one Dispatcher."""

    def __init__(self, app: Celery, *, namespace: str = "kbfix", times: DispatchTimes | None = None) -> None:
        self.app = app
        self.namespace = namespace
        self.times = times or DispatchTimes()
        self._lock = threading.Lock()
        self._served: frozenset[str] = frozenset()
        self._checked_at: float | None = None
        self.published = 0  # tasks sent (for benchmarks and tests)

    def served_queues(self, *, fresh: bool = False) -> frozenset[str]:
        """The queues live workers consume (one broadcast per `liveness_ttl_s` at most).
        Raises BrokerDownError when the broadcast could not be sent (nothing is cached then)."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._checked_at is None or now - self._checked_at > self.times.liveness_ttl_s:
                try:
                    replies = self.app.control.inspect(timeout=self.times.ping_s).active_queues() or {}
                except Exception as exc:  # the broker itself: no answer says anything about workers
                    self._checked_at = None
                    raise BrokerDownError(f"the broker did not take the workers' roll call: {type(exc).__name__}: "
                                          f"{exc}") from exc
                self._served = frozenset(
                    str(q["name"]) for queues in replies.values() for q in (queues or [])
                    if isinstance(q, dict) and q.get("name")
                )
                self._checked_at = time.monotonic()
            return self._served

    def require_worker(self, site: str | None, *, host: str, fresh: bool = False) -> None:
        """Raise UnreachableError "no worker for site X" unless a live worker consumes the site's
        queue (UnreachableError naming the broker when it cannot be asked)."""
        try:
            served = self.served_queues(fresh=fresh)
        except BrokerDownError as exc:
            raise UnreachableError(str(exc), host=host) from exc
        if queue_name(site, self.namespace) not in served:
            raise UnreachableError(f"no worker for site {site_of(site)}", host=host)

    def send(self, host: str, site: str | None, ops: Sequence[OpRequest], *, check_mode: bool,
             command_s: float) -> AgentResponse:
        """One agent request for `host` through its site's worker; the decoded response.

        Raises CheckModeViolation (nothing published), UnreachableError (no worker, broker down,
        no answer to a read-only request in time), OutcomeUnknownError (a mutating request whose
        publish, answer or worker was lost), and every remoting error the worker reports."""
        mutating = tuple(o.id for o in ops if o.mutating)
        if mutating and check_mode:
            raise CheckModeViolation(
                f"check mode: refusing to dispatch mutating op(s) {', '.join(mutating)}; nothing was sent", host=host)
        doc = request_doc(ops)  # ValueError on duplicate ids, before anything is sent
        wait_s = deadline_for(ops, command_s) + self.times.margin_s
        site_name = site_of(site)

        def lost(why: str) -> Exception:
            if mutating:
                return OutcomeUnknownError(
                    f"the request carrying {', '.join(mutating)} went to site {site_name}'s queue and {why}; "
                    "re-read the host's state to learn the outcome", host=host, op_ids=mutating)
            return UnreachableError(f"site {site_name}: {why}", host=host)

        try:
            result = self.app.send_task(
                CHANGE_TASK if mutating else READ_TASK,
                args=[host, check_mode, doc],
                queue=queue_name(site, self.namespace),
                expires=self.times.pickup_s if mutating else wait_s,
                retry=not mutating,  # a mutating message is published once: a retried publish could run twice
            )
            self.published += 1
        except Exception as exc:
            raise lost(f"the broker failed: {type(exc).__name__}: {exc}") from exc
        try:
            answer = self._wait(result, host, site, wait_s, lost)
        finally:
            try:
                result.forget()
            except Exception:  # noqa: S110 - only tidying the result backend
                pass
        return response_of(answer, host=host)

    def _wait(self, result: Any, host: str, site: str | None, wait_s: float, lost: Any) -> Any:
        end = time.monotonic() + wait_s
        step = 1.0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise lost(f"no answer came within {wait_s:g} s")
            try:
                return result.get(timeout=min(step, left), propagate=False, disable_sync_subtasks=False)
            except CeleryTimeoutError:
                pass
            except Exception as exc:
                raise lost(f"its answer was lost: {type(exc).__name__}: {exc}") from exc
            try:
                served = self.served_queues()  # cached: one roll call per liveness_ttl_s for every waiting host
            except BrokerDownError:
                continue  # a broker blip says nothing about the worker: wait on, up to the deadline
            if queue_name(site, self.namespace) not in served:
                raise lost("no worker for the site is left")


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
