"""The broker goes away in the middle of a run and comes back a few seconds later: a private
`redis-server` SIGKILLed and restarted on the same port (every queued message, binding, unacked
message and stored result is gone), and a private RabbitMQ node (`sitesrig.PrivateRabbit`)
SIGKILLed and booted again on the same port and database (durable queues and persistent task
messages survive, unacknowledged ones back in their queue; answers in flight and every
connection do not). The
real site workers and the controller reconnect; read-only requests lost in the outage (or whose
worker could not return the answer) are sent again and the check completes with the embedded
run's verdicts for every host, in bounded time; a mutating request is never sent again. The
machine's shared Redis and RabbitMQ are never touched."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inventory import load_inventory
from kbfix.run import RunOptions, run_check
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.sites.dispatch import BrokerEngine
from kbfix.store import AuditStore
from remoting.agent_protocol import op
from remoting.errors import UnreachableError
from tests import sitesrig
from winlab.faults import Faults
from winlab.fixtures import clone_site, demo_site
from winlab.lab import Lab

log = logging.getLogger(__name__)
SITES = ("HQ", "BRANCH")
HOSTS = 40
DOWN_S = 3.0  # how long the broker stays dead


def _verdicts(results: list[Any]) -> dict[str, tuple[Any, ...]]:
    """Per host: status, error kind and each advisory's status."""
    return {r.host: (r.status.value, r.error.kind if r.error else None,
                     tuple((f.advisory, f.status.value) for f in r.findings))
            for r in results}


class DoneCounter:
    """A run Progress that counts finished hosts."""

    def __init__(self) -> None:
        self.done = 0

    def start(self, kind: str, total: int, batches: int) -> None:
        pass

    def batch(self, index: int, hosts: int) -> None:
        pass

    def host_done(self, result: Any) -> None:
        self.done += 1

    def stop(self) -> None:
        pass


def _lab_hosts() -> list[Any]:
    hosts = clone_site(demo_site(), HOSTS)
    for h in hosts:  # slow enough that the crash lands mid-run; fault hosts keep their faults
        if h.faults == Faults():
            h.faults = Faults(latency_ms=40, ps_start_ms=900)
    return hosts


def _private_broker(kind: str, folder: Path) -> Any:
    """A private broker of `kind` ("redis" or "rabbitmq") in `folder` (skips when rabbitmq-server is missing)."""
    if kind == "redis":
        return sitesrig.PrivateRedis(folder / "redis")
    if not Path(sitesrig.RABBITMQ_SERVER).exists():
        pytest.skip(f"rabbitmq-server is not installed ({sitesrig.RABBITMQ_SERVER}; .ci/run installs it)")
    return sitesrig.PrivateRabbit(folder / "rabbitmq")


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_broker_crash_mid_check_completes_the_run(tmp_path: Path, kind: str) -> None:
    ids = sitesrig.identities(tmp_path)
    ns = sitesrig.namespace()
    with _private_broker(kind, tmp_path) as broker, Lab(_lab_hosts()) as lab:
        url = broker.url
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = load_inventory([inventory]).select(None)
        with AuditStore.in_dir(tmp_path / "state-embedded") as store:
            embedded = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=20)).results
        dispatcher = sitesrig.controller_dispatcher(url, ids, ns, ping_s=1.0, liveness_ttl_s=2.0)
        workers = [sitesrig.start_worker(url, s, inventory, ns, ids.worker, tmp_path) for s in SITES]
        try:
            sitesrig.wait_for_sites(dispatcher, SITES, workers)
            counter = DoneCounter()
            outcome: list[Any] = []
            with AuditStore.in_dir(tmp_path / "state-broker") as store:
                run = threading.Thread(target=lambda: outcome.append(
                    run_check(hosts, BrokerEngine(dispatcher), store, RunOptions(forks=20), progress=counter)))
                started = time.monotonic()
                run.start()
                while counter.done < HOSTS // 4:
                    assert time.monotonic() - started < 120, "the check made no progress before the crash"
                    time.sleep(0.05)
                done_at_crash = counter.done
                log.info("crash with %d hosts done", done_at_crash)
                broker.crash()
                time.sleep(DOWN_S)
                broker.start()
                log.info("broker started again")
                run.join(300)
                took = time.monotonic() - started
                assert not run.is_alive(), "the check hung after the broker came back"
            assert done_at_crash < HOSTS - 5, "the crash did not land mid-run"
            brokered = outcome[0].results
            logs = " | ".join(w.output()[-1500:] for w in workers)
            want = _verdicts(embedded)
            wrong = {r.host: r.error.message if r.error else r.status.value for r in brokered
                     if _verdicts([r])[r.host] != want[r.host]}
            assert not wrong, wrong
            assert all(w.proc.poll() is None for w in workers), logs  # the workers survived the outage
            # The controller saw the comeback (connection errors it meets afterwards on stale
            # connections count as further losses: reads are sent again, which is harmless).
            assert dispatcher.watch.state().epoch >= 1
            assert dispatcher.resent > 0  # requests lost with the broker's queues were sent again
            assert took < 180, took
        finally:
            dispatcher.close()
            sitesrig.stop_workers(workers)


def test_a_broker_that_stays_down_is_unreachable_in_bounded_time(tmp_path: Path) -> None:
    """A broker that was up and does not come back: a request waits `outage_s`, then the host is
    `unreachable` naming the broker (no hang); nothing is published meanwhile."""
    ids = sitesrig.identities(tmp_path)
    ns = sitesrig.namespace()
    with sitesrig.PrivateRedis(tmp_path / "redis") as broker, Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        dispatcher = sitesrig.controller_dispatcher(broker.url, ids, ns, ping_s=1.0, liveness_ttl_s=1.0, outage_s=4.0)
        workers = [sitesrig.start_worker(broker.url, "HQ", inventory, ns, ids.worker, tmp_path)]
        try:
            sitesrig.wait_for_sites(dispatcher, ["HQ"], workers)
            broker.crash()
            started = time.monotonic()
            with pytest.raises(UnreachableError, match="the broker has been unreachable for over 4 s"):
                dispatcher.send("WSUS-SP1", "HQ", [op("1", "registry.values", key=r"HKLM\SOFTWARE")],
                                check_mode=True, command_s=30)
            assert time.monotonic() - started < 20
            assert dispatcher.published == 0
        finally:
            sitesrig.stop_workers(workers)


@pytest.mark.parametrize("down_s", [DOWN_S, 20.0])
def test_broker_crash_during_an_install_never_reruns_it(tmp_path: Path, down_s: float) -> None:
    """The broker crashes (and comes back) while a worker runs an installer: the mutating request
    is never sent again. After a short outage the worker's answer survives (the result store
    retries about 10 s); after 20 s it is lost and the journal records the outcome `unknown`; the
    host then reads `remediated` if the verify re-read reached it, else `unknown`, and `apply
    --resume` completes it. Either way the installer ran once."""
    from kbfix.run import run_apply, run_plan
    from playbooks.model import Status
    from tests.test_run_lab import demo_text, make_packages
    from winlab.fixtures import DEMO_SITE, load_host_fixture_text

    host = "WSUS-SP1"  # site HQ; one KB954960 install in the plan; the fixture's 2 s installer takes 5 s
    ids = sitesrig.identities(tmp_path)
    ns = sitesrig.namespace()
    packages = make_packages(tmp_path / "pkgs")
    lab_hosts = load_host_fixture_text(demo_text(time_scale=2.5), "demo", DEMO_SITE.parent)

    def installs() -> int:
        return len([m for m in lab.records(host).mutations if m.op == "installer.run"])

    with sitesrig.PrivateRedis(tmp_path / "redis") as broker, Lab(lab_hosts) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        hosts = [h for h in load_inventory([inventory]).select(None) if h.name == host]
        dispatcher = sitesrig.controller_dispatcher(broker.url, ids, ns, ping_s=1.0, liveness_ttl_s=2.0)
        engine = BrokerEngine(dispatcher, packages_dir=packages)
        workers = [sitesrig.start_worker(broker.url, "HQ", inventory, ns, ids.worker, tmp_path)]
        try:
            sitesrig.wait_for_sites(dispatcher, ["HQ"], workers)
            with AuditStore.in_dir(tmp_path / "state") as store:
                plan = run_plan(hosts, engine, store, RunOptions()).plan
                assert plan is not None
                outcome: list[Any] = []
                run = threading.Thread(target=lambda: outcome.append(
                    run_apply(hosts, engine, store, RunOptions(), plan=plan)))
                run.start()
                end = time.monotonic() + 60
                while not installs():
                    assert time.monotonic() < end, "the installer did not start: " + workers[0].output()[-2000:]
                    time.sleep(0.02)
                broker.crash()
                time.sleep(down_s)
                broker.start()
                run.join(180)
                assert not run.is_alive(), "apply hung after the broker came back"
                [first] = outcome[0].results
                assert first.status in (Status.UNKNOWN, Status.REMEDIATED), first
                if down_s > 15:  # the worker's answer was lost: the journal says so; only a re-read tells
                    assert [r["outcome"] for r in store.intents(outcome[0].info.id)] == ["unknown"]
                time.sleep(8)  # a redelivered copy of the install, if there were one, would run by now
                assert installs() == 1
                if first.status is Status.UNKNOWN:
                    sitesrig.wait_for_sites(dispatcher, ["HQ"], workers)
                    resumed = run_apply(hosts, engine, store, RunOptions(), resume=outcome[0].info.id)
                    [final] = resumed.results
                    assert final.status in (Status.REMEDIATED, Status.COMPLIANT), final
                assert installs() == 1  # at most once
                assert workers[0].proc.poll() is None, workers[0].output()[-3000:]
        finally:
            sitesrig.stop_workers(workers)


def test_private_rabbit_node_crashes_and_restarts_on_the_same_port(tmp_path: Path) -> None:
    """The rig for a RabbitMQ outage: a node of the test's own, SIGKILLed (its port refuses at
    once) and booted again on the same port and database (a durable queue's persistent message
    survives, as after an operator's restart). The machine's node on 5672 is never touched."""
    from kombu import Connection, Exchange, Queue

    if not Path(sitesrig.RABBITMQ_SERVER).exists():
        pytest.skip(f"rabbitmq-server is not installed ({sitesrig.RABBITMQ_SERVER}; .ci/run installs it)")
    queue = Queue("kbfix-rig", Exchange("kbfix-rig", type="direct"), routing_key="rig", durable=True)
    with sitesrig.PrivateRabbit(tmp_path / "rabbitmq") as node:
        assert node.port != sitesrig.AMQP[1]
        # confirm_publish: RabbitMQ confirms a persistent message once it is on disk
        with Connection(node.url, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="rig", declare=[queue],
                                    delivery_mode=2)
        node.crash()
        assert not sitesrig.service_up(("127.0.0.1", node.port))
        started = time.monotonic()
        node.start()
        assert time.monotonic() - started < 60
        with Connection(node.url, connect_timeout=5) as conn:
            message = conn.SimpleQueue(queue, accept=["json"]).get(timeout=10)  # tests before may have set "auth" only
            assert message.payload == {"n": 1}
            message.ack()
