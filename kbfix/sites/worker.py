"""The worker side: `kbfix worker` consumes one site's queue and runs each request through a
real `remoting.session.AgentSession` built from the worker's OWN inventory (endpoint, account,
password from the inventory, `password_env`, the keyring or KBFIX_PASSWORD): the message only
names the host.

Refusals (answered as errors, nothing contacted): a host not in this worker's inventory, a host
of another site, a host the inventory disables. Check mode holds here too: `kbfix.sites.read`
always opens the session in check mode, and `kbfix.sites.change` honours the message's
check_mode (a signed message: `kbfix.sites.signing`), so AgentSession refuses mutating ops
whenever check mode is on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from kbfix.sites.app import CHANGE_TASK, READ_TASK, make_app, queue_name, site_of
from kbfix.sites.signing import Signing
from kbfix.sites.wire import Answer, answer_error, answer_ok, ops_of
from remoting.errors import CheckModeViolation, ConfigurationError
from remoting.session import AgentSession

log = logging.getLogger(__name__)

SessionFactory = Callable[..., Any]


class SiteWorker:
    """Serves one site's requests for the hosts of `hosts` (inventory name → `inventory.Host`)."""

    def __init__(self, site: str, hosts: Mapping[str, Any], *, session_factory: SessionFactory = AgentSession) -> None:
        self.site = site_of(site)
        self.hosts = dict(hosts)
        self._session_factory = session_factory

    def serve(self, host_name: str, check_mode: bool, doc: str) -> Answer:
        """Run one request document for `host_name`; returns the wire answer (never raises)."""
        try:
            host = self.hosts.get(host_name)
            if host is None:
                raise ConfigurationError(f"host is not in the inventory of the worker for site {self.site}",
                                         host=host_name)
            if site_of(host.site) != self.site:
                raise ConfigurationError(f"host belongs to site {site_of(host.site)}, not to this worker's site "
                                         f"{self.site}", host=host_name)
            if host.skipped_reason or host.endpoint is None:
                raise ConfigurationError(f"the worker's inventory has no endpoint for the host "
                                         f"({host.skipped_reason or 'no address/credentials'})", host=host_name)
            ops = ops_of(doc)
            mutating = [o.id for o in ops if o.mutating]
            if check_mode and mutating:  # before even opening a shell (AgentSession refuses too)
                raise CheckModeViolation(f"check mode: refusing mutating op(s) {', '.join(mutating)}; nothing was sent",
                                         host=host_name)
            with self._session_factory(host.endpoint, check_mode=check_mode) as session:
                return answer_ok(session.run(ops))
        except Exception as exc:  # every failure goes back as a value: the controller maps it
            log.info("%s: %s", host_name, exc)
            return answer_error(exc)


def register_tasks(app: Celery, worker: SiteWorker) -> None:
    """Register `kbfix.sites.read` (check mode forced, late ack, redelivered if its worker is lost)
    and `kbfix.sites.change` (ack on receipt, no retry) on `app`."""

    @app.task(name=READ_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=0)
    def read(host: str, check_mode: bool, doc: str) -> Answer:
        return worker.serve(host, True, doc)

    @app.task(name=CHANGE_TASK, acks_late=False, reject_on_worker_lost=False, max_retries=0)
    def change(host: str, check_mode: bool, doc: str) -> Answer:
        return worker.serve(host, bool(check_mode), doc)


def load_site_hosts(inventory: Sequence[Path], site: str) -> dict[str, Any]:
    """The hosts of `site` in the worker's inventory (name → Host). Raises InventoryError."""
    from inventory import load_inventory

    inv = load_inventory(list(inventory))
    return {h.name: h for h in inv.select(None) if site_of(h.site) == site_of(site)}


def run_worker(
    broker: str,
    site: str,
    inventory: Sequence[Path],
    signing: Signing,
    *,
    concurrency: int = 4,
    namespace: str = "kbfix",
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker (Celery's own `worker_main`, thread pool of `concurrency`) consuming
    the site's queue until stopped (SIGTERM: warm shutdown). Raises InventoryError, SigningError,
    BrokerURLError before the worker starts."""
    hosts = load_site_hosts(inventory, site)
    app = make_app(broker, signing, namespace=namespace)
    register_tasks(app, SiteWorker(site, hosts))
    log.warning("kbfix worker for site %s: %d host(s), queue %s", site_of(site), len(hosts), queue_name(site, namespace))
    app.worker_main([
        "worker",
        "--queues", queue_name(site, namespace),
        "--concurrency", str(concurrency),
        "--pool", "threads",
        "--hostname", f"kbfix-{site_of(site)}-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ])
