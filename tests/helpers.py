"""Helpers the CLI tests share: running the installed `kbfix` script as an operator would, and an
inventory whose hosts nothing answers for (so any contact attempt would show as unreachable).

Also the plan file a `kbfix apply --plan` child reads (`write_plan`), and `sigkill_when` for the
crash tests (kill -9 of a child at a chosen moment).
Used by the reboot, doctor/offline, usage and live-view tests; a test module imports what it needs
(`from tests.helpers import kbfix_argv, child_env, unreachable_inventory`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kbfix.run import RunOptions, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore

REPO = Path(__file__).resolve().parents[1]
#: The `kbfix` console script of the running environment (what `pip install` put beside python).
KBFIX = Path(sys.executable).parent / "kbfix"
#: A port nothing listens on: 9 (discard) on loopback, so a connection is refused at once.
NOTHING_LISTENS = ("127.0.0.1", 9)


def kbfix_argv(*args: str) -> list[str]:
    """`[<venv>/bin/kbfix, *args]` for subprocess."""
    return [str(KBFIX), *args]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a `kbfix` child process: this one's, with the checkout on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def write_plan(hosts: Sequence[Any], packages: Path, state: Path, path: Path) -> Path:
    """Plan `hosts` with the packages in `packages` (the run recorded in the store at `state`) and
    write the plan document to `path`, for a `kbfix apply --plan` child. Returns `path`."""
    with AuditStore.in_dir(state) as store:
        plan = run_plan(list(hosts), PlaybookEngine(packages_dir=packages), store, RunOptions()).plan
    assert plan is not None
    plan.write(path)
    return path


def unreachable_inventory(path: Path, hosts: Sequence[str] = ("WSUS01",), *, credentials: bool = True,
                          host_vars: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write a kbfix inventory at `path` whose `hosts` all point at NOTHING_LISTENS. `credentials`:
    NTLM over http with the lab's account as defaults (False: no defaults at all); `host_vars`:
    host name → its `vars:`. Returns `path`."""
    address, port = NOTHING_LISTENS
    doc: dict[str, Any] = {"kbfix_inventory": 1}
    if credentials:
        doc["defaults"] = {"scheme": "http", "transport": "ntlm", "username": "LAB\\kbfix", "password": "Secret-1"}
    doc["hosts"] = {name: {"address": address, "port": port, **({"vars": dict(host_vars[name])}
                                                                 if host_vars and name in host_vars else {})}
                    for name in hosts}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, within_s: float = 30.0,
                 what: str = "the child did not reach the moment to kill it", settle_s: float = 0.0) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled every 20 ms), `settle_s` seconds after it, and
    reap it. Fails the test (AssertionError naming `what`, with the child's stderr when piped) if the
    child exits first or `within_s` seconds pass; the child is killed and reaped in every case."""
    try:
        deadline = time.monotonic() + within_s
        while not ready():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"{what}: the child exited with {proc.returncode} first. {err}")
            assert time.monotonic() < deadline, what
            time.sleep(0.02)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
