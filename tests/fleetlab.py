"""Test helper: a lab fleet where a share of the hosts carry injected faults, and what each fault
must look like in a run's results.

Used by tests/test_fleet_faults.py. `fault_fleet(n)` clones the demo site's fault-free hosts
(`winlab.fixtures.clone_site`) and gives every `every`-th host one fault of `FAULT_KINDS`, in
turn; `write_fleet_inventory` writes the lab's kbfix inventory with the short per-host timeouts
those faults need (so a faulty host fails in seconds, not in the default minutes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from playbooks.model import Status
from winlab.faults import Faults
from winlab.fixtures import clone_site, demo_site
from winlab.host import EmulatedHost
from winlab.lab import Lab

#: The per-host deadline (s) a fault fleet's run uses (RunOptions.host_deadline_s). Healthy hosts
#: take about 0.5-2 s each at 50 forks on 2 busy cores; hung ones are cut at this mark.
HOST_DEADLINE_S = 10.0


@dataclass(frozen=True)
class FaultKind:
    """One injected fault and its expected effect on a check.

    faults: what the lab injects; timeouts: the host's inventory timeouts (s; None = lab
    defaults); status: the host's expected final status; error_kind: the expected
    `HostResult.error.kind` (None: the host recovers and has no error); message: a regex the
    error message must match; lab_fault: the `HostRecords.faults_injected` key that proves the
    fault fired (None: a refused connection, which the lab never sees: no request is recorded).
    """

    name: str
    faults: Faults
    status: Status | None
    error_kind: str | None
    message: str
    lab_fault: str | None
    timeouts: dict[str, float] | None = field(default=None)


FAULT_KINDS: tuple[FaultKind, ...] = (
    FaultKind("refused", Faults(connect="refused"), Status.UNREACHABLE, "unreachable", r"refused", None),
    FaultKind("auth", Faults(auth="reject"), Status.FAILED, "auth", r"(?i)reject|credential|401", "auth_reject"),
    FaultKind("http_500", Faults(http_500_burst=50), Status.UNREACHABLE, "unreachable", r"HTTP 500", "http_500"),
    # Every Receive answers w:TimedOut: polled until the 2 s command deadline, then signalled.
    FaultKind("receive_timeout", Faults(receive_timeout=True), Status.UNREACHABLE, "timeout",
              r"did not finish within 2 s", "receive_timeout",
              timeouts={"connect": 2, "operation": 1, "read": 3, "command": 2}),
    # The listener accepts and never answers: the HTTP read timeout (2 s) ends it; not retried.
    FaultKind("connect_hang", Faults(connect="hang"), Status.UNREACHABLE, "unreachable", r"did not answer",
              "connect_hang", timeouts={"connect": 2, "operation": 1, "read": 2, "command": 5}),
    # The agent never finishes and its own command deadline lies past the run's host deadline:
    # the runner gives up on the host at HOST_DEADLINE_S (the session still cleans up later).
    FaultKind("hang", Faults(hang_command=True), Status.UNREACHABLE, "timeout", r"within its deadline",
              "hang_command", timeouts={"connect": 2, "operation": 1, "read": 3, "command": HOST_DEADLINE_S + 2}),
    # The first Receive's connection is dropped: a read-only run is retried and the host recovers.
    FaultKind("drop_mid_receive", Faults(drop_mid_receive=True), None, None, r"", "drop_mid_receive"),
)


def healthy_templates() -> list[EmulatedHost]:
    """The demo site's hosts that carry no fault of their own (fresh state)."""
    return [h for h in demo_site() if h.faults == Faults()]


def fault_fleet(n: int, every: int = 10, kinds: tuple[FaultKind, ...] = FAULT_KINDS) -> tuple[list[EmulatedHost], dict[str, FaultKind]]:
    """`n` clones of the healthy demo hosts; host i (0-based) with i % every == every // 2 gets
    the next fault of `kinds` in turn. Returns (hosts, {faulty host name: its FaultKind})."""
    hosts = clone_site(healthy_templates(), n)
    faulty: dict[str, FaultKind] = {}
    k = 0
    for i, h in enumerate(hosts):
        if i % every == every // 2:
            kind = kinds[k % len(kinds)]
            k += 1
            h.faults = kind.faults
            faulty[h.name] = kind
    return hosts, faulty


def write_fleet_inventory(lab: Lab, path: Path, faulty: dict[str, FaultKind]) -> Path:
    """The lab's inventory (NTLM over HTTP) with each faulty host's own `timeouts:`. Returns the path."""
    lab.write_inventory(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, kind in faulty.items():
        if kind.timeouts is not None:
            doc["hosts"][name]["timeouts"] = dict(kind.timeouts)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def template_of(name: str) -> str:
    """The demo template a clone came from (`WSUS-SP1-0007` → `WSUS-SP1`)."""
    return re.sub(r"-\d{4,}$", "", name)


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `timeout_s` seconds pass; returns its last value."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            return predicate()
        time.sleep(poll_s)
    return True
