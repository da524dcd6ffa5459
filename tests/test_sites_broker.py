"""Per-site Celery workers against the real Redis and RabbitMQ of this machine and the embedded
lab (real WinRM over loopback): `kbfix check --broker` with two site workers gives the embedded
run's statuses; no credential crosses the broker; a forged unsigned or foreign-signed mutating
message is refused by the worker; a site with no worker is `unreachable` in bounded time."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.sites.app import CHANGE_TASK, ENV_NAMESPACE, queue_name
from kbfix.sites.signing import generate_identity
from kbfix.sites.wire import request_doc
from remoting.agent_protocol import op
from remoting.errors import CheckModeViolation, UnreachableError
from tests import sitesrig
from winlab.fixtures import demo_site
from winlab.lab import Lab

SITES = ("HQ", "BRANCH")


def _check(inventory: Path, state: Path, env: dict[str, Any], *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["-i", str(inventory), "--state", str(state), "-q", "check", "--format", "json",
                                      *extra], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def _verdicts(doc: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Per host: status, error kind and each advisory's status (what the report says)."""
    return {h["name"]: (h["status"], (h["error"] or {}).get("kind"), tuple((a["id"], a["status"]) for a in h["advisories"]))
            for h in doc["hosts"]}


# ---------------------------------------------------------------------------------- Redis traffic


class RedisMonitor:
    """Everything clients send to Redis (MONITOR) for one DB, until `stop()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = int(url.rsplit("/", 1)[1])
        self.token = f"kbfix-monitor-stop-{time.monotonic_ns()}"
        self.commands: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as m:
            self._ready.set()
            while True:
                cmd = m.next_command()
                if cmd.get("db") != self.db:
                    continue
                if self.token in cmd["command"]:
                    return
                self.commands.append(cmd["command"])

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        assert self._ready.wait(10)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self.url).echo(self.token)
        self._thread.join(15)


_B64 = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


def layers(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """`data` and every base64 run found in it, decoded, recursively (kombu envelope → Celery's
    signed `auth` payload → task body → the request's base64 op arguments)."""
    yield data
    if depth >= 6:
        return
    for m in _B64.finditer(data):
        tok = m.group(0)
        try:
            decoded = base64.b64decode(tok + b"=" * (-len(tok) % 4), validate=True)
        except ValueError:
            continue
        yield from layers(decoded, depth + 1)


@pytest.fixture(scope="module")
def redis_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One lab, an embedded check, and a check through Redis with an HQ and a BRANCH worker
    while MONITOR records every command sent to the test's Redis DB."""
    tmp = tmp_path_factory.mktemp("sites-redis")
    url, ns = sitesrig.redis_url(), sitesrig.namespace()
    ids = sitesrig.identities(tmp)
    with Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp / "inventory.yaml")
        embedded_code, embedded = _check(inventory, tmp / "state-embedded", {})
        workers = [sitesrig.start_worker(url, s, inventory, ns, ids.worker, tmp) for s in SITES]
        try:
            sitesrig.wait_for_sites(sitesrig.controller_dispatcher(url, ids, ns), SITES, workers)
            env = {**ids.env(ids.controller), ENV_NAMESPACE: ns}
            with RedisMonitor(url) as monitor:
                started = time.monotonic()
                code, brokered = _check(inventory, tmp / "state-broker", env, "--broker", url)
                took = time.monotonic() - started
            yield {"embedded": embedded, "embedded_code": embedded_code, "brokered": brokered, "code": code,
                   "monitor": monitor, "inventory": inventory, "took": took, "workers": workers}
        finally:
            sitesrig.stop_workers(workers)


def test_check_through_redis_matches_embedded(redis_run: dict[str, Any]) -> None:
    embedded, brokered = _verdicts(redis_run["embedded"]), _verdicts(redis_run["brokered"])
    assert brokered == embedded
    assert redis_run["code"] == redis_run["embedded_code"] == 4  # the demo site has an unreachable host
    assert {h["site"] for h in redis_run["brokered"]["hosts"]} == set(SITES)
    # Both site workers served requests (each host's work went to its own site's queue).
    for w in redis_run["workers"]:
        assert "kbfix.sites.read" in w.output() and "succeeded" in w.output(), w.output()[-2000:]


def test_no_credential_crosses_redis(redis_run: dict[str, Any]) -> None:
    inv = yaml.safe_load(redis_run["inventory"].read_text(encoding="utf-8"))
    passwords = {inv["defaults"]["password"]} | {h["password"] for h in inv["hosts"].values() if "password" in h}
    commands = redis_run["monitor"].commands
    pushes = [c for c in commands if c.split(" ", 1)[0].upper() in ("LPUSH", "RPUSH")]
    assert pushes, "no task message was seen on the broker"
    seen = [layer for c in commands for layer in layers(c.encode("utf-8", "surrogateescape"))]
    # The decoding reaches the payload: host names, op names and a decoded op argument are there ...
    assert any(b"WSUS-SP1" in s for s in seen)
    assert any(b"registry.values" in s for s in seen)
    assert any(b"Update Services" in s for s in seen)  # a registry key, base64 inside the request document
    assert any(b"computer_name" in s for s in seen)  # a worker's answer
    # ... and no password, in any layer, in either direction.
    for pw in passwords:
        assert len(pw) >= 4
        assert not [s[:200] for s in seen if pw.encode() in s], "a password crossed the broker"


# ---------------------------------------------------------------------------------- RabbitMQ


def test_check_through_rabbitmq_matches_embedded(tmp_path: Path) -> None:
    ns = sitesrig.namespace()
    ids = sitesrig.identities(tmp_path)
    with sitesrig.amqp_url() as url, Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        _, embedded = _check(inventory, tmp_path / "state-embedded", {})
        workers = [sitesrig.start_worker(url, s, inventory, ns, ids.worker, tmp_path) for s in SITES]
        try:
            sitesrig.wait_for_sites(sitesrig.controller_dispatcher(url, ids, ns), SITES, workers)
            # The controller's copy of the inventory carries no password at all: the workers hold them.
            bare = yaml.safe_load(inventory.read_text(encoding="utf-8"))
            for entry in (bare["defaults"], *bare["hosts"].values()):
                entry.pop("password", None)
            controller_inv = tmp_path / "controller-inventory.yaml"
            controller_inv.write_text(yaml.safe_dump(bare), encoding="utf-8")
            env: dict[str, Any] = {**ids.env(ids.controller), ENV_NAMESPACE: ns, "KBFIX_PASSWORD": None}
            code, brokered = _check(controller_inv, tmp_path / "state-broker", env, "--broker", url)
        finally:
            sitesrig.stop_workers(workers)
    # The same verdicts from a controller that holds no credential.
    assert _verdicts(brokered) == _verdicts(embedded)
    assert code == 4


# ---------------------------------------------------------------------------------- refusals


def test_site_without_worker_is_unreachable_in_bounded_time(tmp_path: Path) -> None:
    url, ns = sitesrig.redis_url(), sitesrig.namespace()
    ids = sitesrig.identities(tmp_path)
    with Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        workers = [sitesrig.start_worker(url, "HQ", inventory, ns, ids.worker, tmp_path)]
        try:
            sitesrig.wait_for_sites(sitesrig.controller_dispatcher(url, ids, ns), ["HQ"], workers)
            started = time.monotonic()
            code, doc = _check(inventory, tmp_path / "state", {**ids.env(ids.controller), ENV_NAMESPACE: ns},
                               "--broker", url)
            took = time.monotonic() - started
        finally:
            sitesrig.stop_workers(workers)
        branch = [h for h in doc["hosts"] if h["site"] == "BRANCH"]
        hq = [h for h in doc["hosts"] if h["site"] == "HQ"]
        assert branch and hq
        for h in branch:
            assert h["status"] == "unreachable", h
            assert h["error"]["message"].endswith("no worker for site BRANCH"), h["error"]
            assert lab.records(h["name"]).requests.total() == 0  # nothing reached the host
        assert any(h["status"] == "non_compliant" for h in hq)  # HQ went through its worker
    assert code == 4
    assert took < 30, f"no-worker hosts took {took:.1f} s"


FORGE = r'''
import json, sys
from celery import Celery
from kbfix.sites.app import make_app
from kbfix.sites.signing import Signing
broker, ns, queue, task, host, doc, key, cert, store = sys.argv[1:10]
if key == "-":  # unsigned: a plain JSON message, as anyone with broker access could publish
    app = Celery("forger", broker=broker, set_as_current=False)
    app.send_task(task, args=[host, False, doc], queue=queue, serializer="json")
else:           # signed with a key the worker does not trust
    app = make_app(broker, Signing(key, cert, store), namespace=ns)
    app.send_task(task, args=[host, False, doc], queue=queue)
print("sent")
'''


def test_forged_mutating_messages_are_refused(tmp_path: Path) -> None:
    """An unsigned and a foreign-signed `kbfix.sites.change` (service.restart, check_mode off) are
    dropped by the worker before any task code runs; the same request signed by the controller
    runs (the control: the lab does count that mutation)."""
    url, ns = sitesrig.redis_url(), sitesrig.namespace()
    ids = sitesrig.identities(tmp_path)
    foreign = generate_identity(tmp_path / "foreign", "mallory")
    host = "WSUS-SP1"
    doc = request_doc([op("1", "service.restart", name="WsusService")])
    queue = queue_name("HQ", ns)
    with Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        workers = [sitesrig.start_worker(url, "HQ", inventory, ns, ids.worker, tmp_path)]
        try:
            dispatcher = sitesrig.controller_dispatcher(url, ids, ns)
            sitesrig.wait_for_sites(dispatcher, ["HQ"], workers)
            for key, cert, store in (("-", "-", "-"), (str(foreign.key), str(foreign.cert), foreign.store)):
                sent = subprocess.run([sys.executable, "-c", FORGE, url, ns, queue, CHANGE_TASK, host, doc, key, cert,
                                       store], capture_output=True, text=True, timeout=60)
                assert sent.stdout.strip() == "sent", sent.stderr
            r = redis.Redis.from_url(url)
            end = time.monotonic() + 20
            def refused(log: str) -> tuple[bool, bool]:
                return ("Refusing to deserialize untrusted content" in log, "Unknown certificate" in log)

            while time.monotonic() < end and (r.llen(queue) or not all(refused(workers[0].output()))):
                time.sleep(0.2)
            log = workers[0].output()
            assert r.llen(queue) == 0  # consumed and dropped, not left for another worker
            # Unsigned: JSON is not an accepted content type; foreign: the signer is not in the store.
            assert refused(log) == (True, True), log[-3000:]
            assert lab.records(host).mutations == [] and lab.records(host).processes_started == 0
            assert "kbfix.sites.change[" not in log  # no task ran
            # The control: the controller's own signed message does run the op.
            with pytest.raises(CheckModeViolation):
                dispatcher.send(host, "HQ", [op("1", "service.restart", name="WsusService")], check_mode=True,
                                command_s=30)
            resp = dispatcher.send(host, "HQ", [op("1", "service.restart", name="WsusService")], check_mode=False,
                                   command_s=30)
            assert resp.results[0].op == "service.restart"
            assert [m.op for m in lab.records(host).mutations] == ["service.restart"]
        finally:
            sitesrig.stop_workers(workers)


def test_no_worker_and_a_lost_broker_fail_fast_not_hang(tmp_path: Path) -> None:
    """Without any worker a session is refused within the ping timeout; a broker that does not
    answer at all (nothing listens) gives `unreachable` naming the broker, bounded too."""
    ids = sitesrig.identities(tmp_path)
    for url, why in ((sitesrig.redis_url(), "no worker for site HQ"), ("redis://127.0.0.1:1/0", "the broker did not")):
        dispatcher = sitesrig.controller_dispatcher(url, ids, sitesrig.namespace(), ping_s=1.0)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match=why):
            dispatcher.require_worker("HQ", host="WSUS-SP1")
        assert time.monotonic() - started < 20
