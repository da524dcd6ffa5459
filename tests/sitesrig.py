"""Test helper for the broker tests: signing identities, a Redis DB / RabbitMQ vhost per test,
real `kbfix worker` processes (Celery's own worker) and waiting until they consume their queues.

The services are the machine's real ones (Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672
guest/guest; `.ci/run` starts them or fails clearly). Every test uses its own queue namespace;
Redis tests also a DB number of their own, RabbitMQ tests a vhost of their own when
`rabbitmqctl` can create one (else the shared `/` vhost with the unique namespace).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kbfix.sites.app import make_app, queue_name
from kbfix.sites.dispatch import Dispatcher
from kbfix.sites.signing import ENV_CERT, ENV_KEY, ENV_STORE, Signing, generate_identity

REDIS = ("127.0.0.1", 6379)
REDIS_SERVER = "redis-server"  # Debian package redis-server
AMQP = ("127.0.0.1", 5672)


def service_up(addr: tuple[str, int]) -> bool:
    """True when something accepts TCP connections on `addr`."""
    try:
        with socket.create_connection(addr, timeout=2):
            return True
    except OSError:
        return False


def require_service(addr: tuple[str, int], name: str) -> None:
    """Fail (not skip) when a required service is missing: CI starts them (.ci/run)."""
    if not service_up(addr):
        raise AssertionError(f"{name} is not running on {addr[0]}:{addr[1]}; start it (see .ci/run / README 'Across sites')")


@dataclass(frozen=True)
class Identities:
    """The controller's and the workers' signing material, trusting each other (one store)."""

    controller: Signing
    worker: Signing

    def env(self, who: Signing) -> dict[str, str]:
        """KBFIX_SIGN_* for one party."""
        return {ENV_KEY: str(who.key), ENV_CERT: str(who.cert), ENV_STORE: who.store}


def identities(folder: Path) -> Identities:
    """A controller and a worker identity in `folder/certs` (store: `folder/certs/*.pem`)."""
    certs = folder / "certs"
    return Identities(generate_identity(certs, "controller"), generate_identity(certs, "worker"))


def namespace() -> str:
    """A queue namespace no other test uses."""
    return f"kbfixt{uuid.uuid4().hex[:10]}"


def redis_url() -> str:
    """A Redis URL on a DB number picked at random (1-15; DB 0 is left to people)."""
    require_service(REDIS, "Redis")
    return f"redis://127.0.0.1:6379/{random.randint(1, 15)}"


@contextlib.contextmanager
def amqp_url() -> Iterator[str]:
    """An AMQP URL on a fresh vhost (deleted afterwards), or on `/` when rabbitmqctl cannot make one."""
    require_service(AMQP, "RabbitMQ")
    vhost = f"kbfix-test-{uuid.uuid4().hex[:10]}"
    made = False
    try:
        made = subprocess.run(["rabbitmqctl", "add_vhost", vhost], capture_output=True, timeout=60).returncode == 0
        made = made and subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                                       capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        made = False
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}" if made else "amqp://guest:guest@127.0.0.1:5672//"
    finally:
        if made:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


@dataclass
class WorkerProc:
    """One `kbfix worker` process and the file its output goes to."""

    site: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """What the worker wrote so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_worker(broker: str, site: str, inventory: Path, ns: str, signing: Signing, folder: Path,
                 *, concurrency: int = 4, extra_env: Mapping[str, str] | None = None,
                 loglevel: str = "INFO") -> WorkerProc:
    """Start `kbfix worker` (the real CLI, Celery's own worker) for `site` in a subprocess."""
    env = {**os.environ, ENV_KEY: str(signing.key), ENV_CERT: str(signing.cert), ENV_STORE: signing.store,
           **(extra_env or {})}
    log = folder / f"worker-{site}-{uuid.uuid4().hex[:6]}.log"
    args = [sys.executable, "-c", "from kbfix.cli import app; app()", "worker", "--broker", broker, "--site", site,
            "-i", str(inventory), "--namespace", ns, "--concurrency", str(concurrency),
            "--loglevel", loglevel]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    return WorkerProc(site, proc, log)


def stop_workers(workers: Sequence[WorkerProc]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL after 20 s."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in workers:
        try:
            w.proc.wait(20)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(10)


def wait_for_sites(dispatcher: Dispatcher, sites: Sequence[str], workers: Sequence[WorkerProc],
                   timeout_s: float = 90.0) -> None:
    """Wait until live workers consume every site's queue; AssertionError with the workers' logs otherwise."""
    wanted = {queue_name(s, dispatcher.namespace) for s in sites}
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if wanted <= dispatcher.served_queues(fresh=True):
            return
        dead = [w for w in workers if w.proc.poll() is not None]
        if dead:
            raise AssertionError(f"worker for {dead[0].site} exited: {dead[0].output()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"workers not ready in {timeout_s} s: " + " | ".join(w.output()[-1500:] for w in workers))


def controller_dispatcher(broker: str, ids: Identities, ns: str, **times: float) -> Dispatcher:
    """A controller-side Dispatcher in this process (registers the controller's signing identity)."""
    from kbfix.sites.dispatch import DispatchTimes

    return Dispatcher(make_app(broker, ids.controller, namespace=ns), namespace=ns, times=DispatchTimes(**times))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A `redis-server` of the test's own on a free loopback port, without persistence, so that
    `crash()` (SIGKILL) loses every queue, binding, unacked message and result in it, as a broker
    crash does; `start()` brings a fresh one back on the same port (the same URL). The machine's
    shared Redis is never touched. Use as a context manager (killed on exit)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and wait until it accepts connections (AssertionError otherwise)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.folder / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + timeout_s
        while not service_up(("127.0.0.1", self.port)):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def crash(self) -> None:
        """SIGKILL the server (no shutdown, nothing saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.crash()



RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian package rabbitmq-server; the
# /usr/sbin one is a wrapper that switches to the `rabbitmq` user (who cannot write the test's folder)


class PrivateRabbit:
    """A RabbitMQ node of the test's own (`kbfixtest<port>@localhost`) on a free loopback port,
    its database and logs in `folder`; the machine's shared node on 5672 is never touched.
    `crash()` SIGKILLs the node's whole process group (beam.smp and its helpers: no shutdown, the
    clients' connections drop at once); `start()` boots it again on the same port and database,
    as an operator's restart does (durable queues and persistent messages survive, unacknowledged
    ones back in their queue; transient answers in flight and every connection do not). Boot takes ~5-15 s on a loaded
    2-core machine. Use as a context manager (killed on exit)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"kbfixtest{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _env(self) -> dict[str, str]:
        f = self.folder
        return {**os.environ, "HOME": str(f), "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(f / "mnesia"), "RABBITMQ_LOG_BASE": str(f / "log"),
                "RABBITMQ_CONFIG_FILE": str(f / "rabbitmq"), "RABBITMQ_ADVANCED_CONFIG_FILE": str(f / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(f / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(f / "enabled_plugins"), "RABBITMQ_PID_FILE": str(f / "pid")}

    def start(self, timeout_s: float = 60.0) -> None:
        """Boot the node and wait until it accepts AMQP connections (AssertionError with its log otherwise)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")  # no management plugin: a faster boot
        self.starts += 1
        log_path = self.folder / f"rabbitmq-{self.starts}.log"
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self._env(), cwd=self.folder, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout_s
        while not service_up(("127.0.0.1", self.port)):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.crash()
                raise AssertionError(f"rabbitmq-server did not start on port {self.port}: "
                                     + log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.1)

    def crash(self) -> None:
        """SIGKILL the node's process group (its own session: nothing else is in it), then wait
        until its port refuses connections (beam.smp dies a moment after its parent script)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        end = time.monotonic() + 10
        while service_up(("127.0.0.1", self.port)) and time.monotonic() < end:
            time.sleep(0.05)

    def __enter__(self) -> PrivateRabbit:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.crash()
