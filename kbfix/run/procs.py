"""Read-only contact work spread over processes (`--procs N`): one Python process runs out of
CPU (one core under the GIL) long before 100 forks run out of network.

Design (the simplest that keeps every guarantee of a single process):

- N child processes (forked from a clean `forkserver`: no locks or threads inherited) each load the inventory
  THEMSELVES from `InventorySpec` (inventory paths and vault options: file paths and vault ids,
  never a resolved credential; a password that must be typed cannot be passed, so
  `procs_for` keeps such runs in one process). What crosses the process boundary: the spec,
  then per host its inventory name, its `HostHistory` (past remedies, from the store) and the
  answer — a `HostResult` or a remoting error's type and fields (`tests/test_run_procs.py`
  reads every byte that crosses and looks for the inventory's secrets).
- A child does a host's check-mode contact and assessment: open one session in check mode (so
  remoting refuses any mutating op, as in the parent), gather, assess with the playbooks. The
  parent does everything that writes: the run's schedule, max-fail, planning, the audit store
  and the cross-host links, in inventory order, as without processes.
- apply (and any session opened with check_mode=False) stays in the parent process: its
  journal writes each action's intent before the action is sent, and that ordering must not
  depend on another process. Only the read-only gather of apply could move; it does not.

`ProcsEngine` is a `PlaybookEngine` whose check-mode sessions are `ProcsSession`s on a
`ContactPool`; each child runs ceil(forks / N) hosts at once.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.run.protocols import HostLike
from playbooks.history import HostHistory
from playbooks.model import HostResult
from remoting.errors import RemotingError

log = logging.getLogger(__name__)

_CPU = "cpu"  # the task id of a child's last message: its CPU seconds

#: Fewest hosts per process worth a process: the forkserver's imports cost ~1 s of CPU and
#: every answer is pickled twice, so a small run is cheaper in one process.
HOSTS_PER_PROC = 200

# Every message that crosses the boundary goes through these two (tests tap them).
_dumps: Callable[[Any], bytes] = pickle.dumps
_loads: Callable[[bytes], Any] = pickle.loads


@dataclass(frozen=True)
class InventorySpec:
    """How a child loads the inventory itself: what the command line named (paths, vault ids,
    vault password FILES); `extra_dirs`: more playbook folders. No credential, resolved or not."""

    paths: tuple[str, ...]
    vault_ids: tuple[str, ...] = ()
    vault_password_files: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()


def procs_for(requested: int, hosts: int, forks: int, *, interactive_secrets: bool = False) -> int:
    """The processes a run of `hosts` hosts uses for `requested` (0: the machine's cores):
    at least HOSTS_PER_PROC hosts and one fork per process, and 1 when a secret must be typed
    (a vault password prompt: children could not ask for it and it is never passed to them)."""
    want = requested if requested > 0 else (os.cpu_count() or 1)
    if interactive_secrets:
        return 1
    return max(1, min(want, hosts // HOSTS_PER_PROC, forks))


# ------------------------------------------------------------------------------ the child side


#: Imported once by the forkserver before it forks any child (see `forkserver_preload`).
PRELOAD = ("kbfix.run.procs", "inventory.configured", "kbfix.run.contact_warmup")
#: The module the `kbfix` console script imports (its whole body besides `sys` and `re`).
CLI_MODULE = "kbfix.cli"


def forkserver_preload(loaded: Mapping[str, object]) -> list[str]:
    """The modules the forkserver imports once, for every child (`loaded`: this process's
    `sys.modules`): PRELOAD, and `kbfix.cli` when this process has it, i.e. a run started by the
    `kbfix` command. Why: multiprocessing prepares every child it starts (spawn or forkserver)
    by running the parent's main script again as `__mp_main__` (multiprocessing/spawn.py,
    `_fixup_main_from_path`; "Safe importing of main module" in the multiprocessing docs). For
    the console script that is `from kbfix.cli import app`: every command module, typer and
    rich, 0.4–0.6 s of CPU in each child (measured with 400 hosts and `--procs 2`), unless the
    forkserver has already imported them. (Naming `__main__` in the preload does not help on
    Python 3.11: the forkserver never receives the main path.)"""
    return [*PRELOAD, *([CLI_MODULE] if CLI_MODULE in loaded else [])]


def _load_hosts(spec: InventorySpec) -> dict[str, Any]:
    from inventory.configured import InventoryRequest, load_configured

    request = InventoryRequest([Path(p) for p in spec.paths], list(spec.vault_ids),
                               [Path(p) for p in spec.vault_password_files], False)
    inv = load_configured(request).inventory
    return {h.name: h for h in inv.select(None)}


def _error_state(exc: BaseException) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """A remoting error as (module, class name, args, fields): rebuilt as the same type in the
    parent, so the run classifies it exactly as in one process. Other exceptions travel as
    RuntimeError text (a bug: the run reports it `internal`)."""
    if isinstance(exc, RemotingError):
        return type(exc).__module__, type(exc).__qualname__, exc.args, dict(vars(exc))
    return "builtins", "RuntimeError", (f"{type(exc).__name__}: {exc}",), {}


def _rebuild_error(state: tuple[str, str, tuple[Any, ...], dict[str, Any]]) -> BaseException:
    import importlib

    module, name, args, fields = state
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{module}.{name}: {args}")
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(fields)
    return exc


def child_main(conn: Any, spec: InventorySpec, threads: int) -> None:
    """A child process: load the inventory and playbooks, then assess the hosts it is sent,
    `threads` at once, answering each as soon as it is done; stop on None or a closed pipe."""
    hosts = _load_hosts(spec)
    engine = PlaybookEngine(extra_dirs=[Path(p) for p in spec.extra_dirs])
    send_lock = threading.Lock()

    def one(task: int, name: str, last_success: dict[str, Any]) -> None:
        try:
            host = hosts[name]
            history = HostHistory(MappingProxyType(last_success))
            with engine.session(host, check_mode=True) as s:
                answer: tuple[str, Any] = ("ok", engine.assess_in(s, host, history))
        except BaseException as exc:  # every outcome goes back to the parent, which classifies it
            answer = ("error", _error_state(exc))
        data = _dumps((task, answer))
        with send_lock:
            conn.send_bytes(data)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kbfix-contact") as pool:
        while True:
            try:
                msg = _loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            if msg is None:
                break
            pool.submit(one, *msg)
    with send_lock:  # last word: this process's CPU seconds (benchmarks/fleet.py adds them up)
        conn.send_bytes(_dumps((_CPU, time.process_time())))


# ------------------------------------------------------------------------------ the parent side


class _Child:
    def __init__(self, ctx: Any, spec: InventorySpec, threads: int, on_answer: Callable[[int, Any], None],
                 on_lost: Callable[[_Child], None]) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=child_main, args=(child_conn, spec, threads), daemon=True,
                                   name="kbfix-contact")
        self.process.start()
        child_conn.close()
        self.pending: set[int] = set()
        self.cpu_s = 0.0  # the child's CPU seconds, reported when it stops
        self.alive = True
        self.closing = False
        self._send_lock = threading.Lock()
        self._on_answer, self._on_lost = on_answer, on_lost
        self.reader = threading.Thread(target=self._read, name="kbfix-contact-reader", daemon=True)
        self.reader.start()

    def send(self, msg: Any) -> None:
        data = _dumps(msg)
        with self._send_lock:
            self.conn.send_bytes(data)

    def _read(self) -> None:
        while True:
            try:
                task, answer = _loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                self._on_lost(self)
                return
            if task == _CPU:
                self.cpu_s = float(answer)
                continue
            self._on_answer(task, answer)


class ContactPool:
    """`procs` child processes doing check-mode contact work (see the module docstring);
    `forks`: hosts at once over all of them. Use as a context manager (stops the children)."""

    def __init__(self, spec: InventorySpec, procs: int, forks: int) -> None:
        self.spec = spec
        self.procs = max(1, procs)
        self.threads = max(1, math.ceil(forks / self.procs))
        self._ids = itertools.count()
        self._futures: dict[int, tuple[_Child, Future[HostResult]]] = {}
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self.children_cpu_s = 0.0  # CPU seconds the children reported (after close)

    def __enter__(self) -> ContactPool:
        _dumps(self.spec)  # what the spawn hands each child: through the tap like every message
        # forkserver: one clean single-threaded server process imports kbfix once and forks each
        # child from it (no locks or threads of this process inherited, no import per child);
        # contact_warmup also loads the built-in playbooks there, once for every child.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(forkserver_preload(sys.modules))
        self._children = [_Child(ctx, self.spec, self.threads, self._answer, self._lost) for _ in range(self.procs)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask every child to finish its hosts and stop; wait for them (bounded)."""
        for c in self._children:
            c.closing = True
            try:
                c.send(None)
            except OSError:
                pass
        for c in self._children:
            c.process.join(timeout=30)
            if c.process.is_alive():
                c.process.terminate()
                c.process.join(timeout=5)
            c.reader.join(timeout=5)
            self.children_cpu_s += c.cpu_s
            c.conn.close()
        self._children = []

    @property
    def alive(self) -> bool:
        """Whether any child still runs (a lost child is marked when its pipe closes)."""
        return any(c.alive for c in self._children)

    def assess(self, name: str, history: HostHistory) -> HostResult:
        """The host's check-mode gather and assessment, done by a child. Raises the remoting error
        the child met (same type and fields), or UnreachableError if the child died."""
        from remoting.errors import UnreachableError

        future: Future[HostResult] = Future()
        with self._lock:
            alive = [c for c in self._children if c.alive]
            if not alive:
                raise UnreachableError("no contact process is running (see the log for why they stopped)", host=name)
            child = min(alive, key=lambda c: len(c.pending))  # the least busy child
            task = next(self._ids)
            child.pending.add(task)
            self._futures[task] = (child, future)
        try:
            child.send((task, name, dict(history.last_success)))  # (a MappingProxyType does not pickle)
        except OSError:
            self._lost(child)  # the child is gone: fails this host's future (and its others)
        return future.result()

    def _answer(self, task: int, answer: tuple[str, Any]) -> None:
        with self._lock:
            child, future = self._futures.pop(task)
            child.pending.discard(task)
        kind, value = answer
        if kind == "ok":
            future.set_result(value)
        else:
            future.set_exception(_rebuild_error(value))

    def _lost(self, child: _Child) -> None:
        from remoting.errors import UnreachableError

        if child.alive and not child.closing:
            log.warning("contact process %s stopped (exit code %s)", child.process.pid, child.process.exitcode)
        child.alive = False
        with self._lock:
            lost = [(t, self._futures.pop(t)[1]) for t in list(child.pending) if t in self._futures]
            child.pending.clear()
        for _t, future in lost:
            future.set_exception(UnreachableError("the contact process working on this host stopped"))


class ProcsSession:
    """A check-mode session whose work is done by a `ContactPool` child: `assess` only (the
    engine calls it); the child opens and closes the real session."""

    def __init__(self, pool: ContactPool, host: HostLike) -> None:
        self.pool = pool
        self.host = host

    def __enter__(self) -> ProcsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, ops: Sequence[Any]) -> Any:
        """Not used: a ProcsSession only assesses (see ProcsEngine)."""
        raise NotImplementedError("a ProcsSession runs whole assessments in its child process")


class SpreadEngine(PlaybookEngine):
    """`base`'s playbooks, packages, history and session factory (a copy of base, not a fresh
    load), whose ProcsSessions are assessed by their pool's children; the base of `ProcsEngine`
    and of kbfix.run.procs_auto's `AdaptiveEngine`, which decide which sessions those are."""

    def __init__(self, base: PlaybookEngine) -> None:  # a copy of base, not super().__init__
        self.__dict__.update(vars(base))  # the same loaded playbooks, packages and session factory

    def assess(self, session: Any, host: HostLike) -> HostResult:
        """In a child for a ProcsSession (with this host's history from the store), else here."""
        if isinstance(session, ProcsSession):
            return session.pool.assess(host.name, self.history(host.name))
        return super().assess(session, host)


class ProcsEngine(SpreadEngine):
    """`base`'s playbooks, packages and history, with check-mode gather + assess run in `pool`'s
    children; sessions opened with check_mode=False (apply) stay in this process."""

    def __init__(self, pool: ContactPool, base: PlaybookEngine) -> None:
        super().__init__(base)
        self.pool = pool

    def session(self, host: HostLike, *, check_mode: bool) -> Any:
        """A ProcsSession in check mode, else the real AgentSession."""
        if check_mode:
            return ProcsSession(self.pool, host)
        return super().session(host, check_mode=check_mode)


@contextmanager
def spread(engine: Any, hosts: int, *, procs: int, forks: int, spec: InventorySpec,
           interactive_secrets: bool = False) -> Iterator[Any]:
    """`engine` with its check-mode contact work spread over `procs_for(...)` processes for the
    run's duration, or `engine` itself when one process is used or it is not a plain
    PlaybookEngine over AgentSession (a broker's, an offline answers', a traced one).
    procs 0 (the default, left to kbfix): an `AdaptiveEngine` that starts in this process and
    spreads over the cores only once this process is CPU-bound with a core idle
    (kbfix/run/procs_auto.py says why); procs N ≥ 1: N processes from the start."""
    from remoting.session import AgentSession

    n = procs_for(procs, hosts, forks, interactive_secrets=interactive_secrets)
    if n <= 1 or type(engine) is not PlaybookEngine or engine._session_factory is not AgentSession or not spec.paths:
        yield engine
        return
    if procs == 0:  # left to kbfix: one process until it is the bottleneck (kbfix.run.procs_auto)
        from kbfix.run.procs_auto import AdaptiveEngine

        adaptive = AdaptiveEngine(engine, spec, hosts=hosts, forks=forks)
        try:
            yield adaptive
        finally:
            adaptive.close()
        return
    with ContactPool(spec, n, forks) as pool:
        yield ProcsEngine(pool, engine)
