"""The runner's orchestration with a plain-Python engine (no network): batches, max-fail, window,
drift, stop, resume and what the audit store records. The WinRM path is tested against the lab
in test_run_lab.py; here the per-host work is ordinary callables, which is the scheduler's input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kbfix.rollout import parse_serial
from kbfix.run import RunControl, RunOptions, exit_code, run_apply, run_check, run_plan, skip_reason
from kbfix.store import AuditStore, StoreJournal
from kbfix.window import ChangeWindow
from playbooks.model import ExecutedAction, Finding, HostResult, PlannedAction, SkipReason, Status


@dataclass
class FakeHost:
    name: str
    site: str | None = "hq"
    roles: list[str] = field(default_factory=lambda: ["wsus"])
    vars: dict[str, Any] = field(default_factory=dict)
    endpoint: Any = "endpoint"
    skipped_reason: str | None = None


@dataclass
class FakeMachine:
    """One emulated host's state: fixed or not, how its installer behaves."""

    fixed: bool = False
    install_seconds: float = 0.0
    exit_code: int = 0
    down: bool = False
    fixes: bool = True  # False: the installer exits 0 without fixing (KB954960's first release)
    installs: int = 0
    extra_fact: str = "a"


class FakeEngine:
    """The Engine protocol over in-memory machines; counts sessions and their check mode."""

    def __init__(self, machines: dict[str, FakeMachine]) -> None:
        self.machines = machines
        self.sessions: list[tuple[str, bool]] = []
        self.open = 0
        self.lock = threading.Lock()
        self.on_install: Callable[[str], None] = lambda _h: None

    @contextmanager
    def session(self, host: FakeHost, *, check_mode: bool) -> Iterator[str]:
        if self.machines[host.name].down:
            raise ConnectionRefusedError(f"{host.name}: refused")
        with self.lock:
            self.sessions.append((host.name, check_mode))
            self.open += 1
        try:
            yield "check" if check_mode else "write"
        finally:
            with self.lock:
                self.open -= 1

    def ping(self, session: str, host: FakeHost) -> dict[str, Any]:
        return {"computer_name": host.name.upper()}

    def assess(self, session: str, host: FakeHost) -> HostResult:
        m = self.machines[host.name]
        status = Status.COMPLIANT if m.fixed else Status.NON_COMPLIANT
        f = Finding(advisory="KB954960", status=status, reason="dll version")
        facts = {"fixed": m.fixed, "extra": m.extra_fact}
        return HostResult.from_findings(host.name, [f], roles=["wsus"], os={"version": "5.2"}, facts=facts,
                                        facts_digest=f"{m.fixed}-{m.extra_fact}")

    def plan(self, host: FakeHost, a: HostResult) -> HostResult:
        m = self.machines[host.name]
        out = []
        for f in a.findings:
            if f.status is Status.NON_COMPLIANT:
                f = f.model_copy(update={"planned": [PlannedAction(
                    id="KB954960-install", advisory="KB954960", kind="install_package", description="install",
                    estimated_seconds=m.install_seconds, expected_exit_codes=[0, 3010])]})
            out.append(f)
        return a.model_copy(update={"findings": out})

    def apply(self, session: str, host: FakeHost, a: HostResult, journal: StoreJournal,
              should_stop: Callable[[], SkipReason | None]) -> list[Finding]:
        assert session == "write"
        m = self.machines[host.name]
        out = []
        for f in a.findings:
            executed = []
            for p in f.planned:
                if should_stop():
                    break
                started = datetime.now(timezone.utc)
                journal.intent(host.name, p)
                self.on_install(host.name)
                time.sleep(m.install_seconds)
                m.installs += 1
                ok = m.exit_code in p.expected_exit_codes
                if ok and m.fixes:
                    m.fixed = True
                ex = ExecutedAction(action_id=p.id, outcome="success" if ok else "failed", exit_code=m.exit_code,
                                    started=started, ended=datetime.now(timezone.utc))
                journal.result(host.name, p, ex)
                executed.append(ex)
            status = f.status
            if executed:
                status = Status.REMEDIATED if all(e.outcome == "success" for e in executed) else Status.FAILED
            out.append(f.model_copy(update={"executed": executed, "status": status}))
        return out

    def verify(self, session: str, host: FakeHost, before: list[Finding]) -> list[Finding]:
        m = self.machines[host.name]
        return [f.model_copy(update={"status": Status.REMEDIATED if m.fixed else
                                     (Status.FAILED if f.executed else f.status)}) for f in before]

    def link(self, results: dict[str, HostResult], addresses: Any) -> dict[str, HostResult]:
        return dict(results)

    def advisories(self) -> dict[str, dict[str, Any]]:
        return {"KB954960": {"title": "WSUS", "sources": [], "severity": "high", "summary": ""}}


def _setup(n: int, **machine: Any) -> tuple[list[FakeHost], FakeEngine]:
    hosts = [FakeHost(f"h{i:02d}") for i in range(n)]
    return hosts, FakeEngine({h.name: FakeMachine(**machine) for h in hosts})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore.in_dir(tmp_path) as s:
        yield s


def test_check_then_plan_then_apply_then_check(store: AuditStore) -> None:
    hosts, engine = _setup(4)
    engine.machines["h03"].fixed = True
    check = run_check(hosts, engine, store, RunOptions(forks=4))
    assert [r.status for r in check.results] == [Status.NON_COMPLIANT] * 3 + [Status.COMPLIANT]
    assert exit_code(check.results) == 3 and check.info.state == "completed"
    plan = run_plan(hosts, engine, store, RunOptions())
    assert plan.plan is not None and [len(h.planned) for h in plan.plan.hosts] == [1, 1, 1, 0]
    assert all(check_mode for _h, check_mode in engine.sessions)  # check and plan: check mode only
    assert sum(m.installs for m in engine.machines.values()) == 0
    assert len(store.planned(plan.info.id)) == 3
    applied = run_apply(hosts, engine, store, RunOptions(), plan=plan.plan)
    assert [r.status for r in applied.results] == [Status.REMEDIATED] * 3 + [Status.COMPLIANT]
    # Nothing planned on h03, yet it is re-gathered: its status comes from fresh facts, never the plan (issue 20).
    assert ("h03", False) in engine.sessions and engine.machines["h03"].installs == 0
    assert sorted((r["host"], r["outcome"]) for r in store.intents(applied.info.id)) == [
        (f"h0{i}", "success") for i in range(3)]
    assert exit_code(run_check(hosts, engine, store, RunOptions()).results) == 0
    assert engine.open == 0
    assert [r.kind for r in store.list_runs()] == ["check", "apply", "plan", "check"]


def test_serial_batches_and_max_fail_stop(store: AuditStore) -> None:
    hosts, engine = _setup(6)
    engine.machines["h01"].exit_code = 1603  # the second host (batch 2) fails its installer
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    batches_seen: list[tuple[int, int]] = []

    class P:
        def start(self, kind: str, total: int, batches: int) -> None: ...
        def batch(self, index: int, hosts: int) -> None: batches_seen.append((index, hosts))
        def host_done(self, result: Any) -> None: ...
        def stop(self) -> None: ...

    out = run_apply(hosts, engine, store, RunOptions(serial=parse_serial("1,50%,100%"), max_fail_percent=30),
                    plan=plan, progress=P())
    assert batches_seen == [(0, 1), (1, 3)]  # batch 3 never started
    st = {r.host: r.status for r in out.results}
    assert st["h00"] is Status.REMEDIATED and st["h01"] is Status.FAILED
    assert st["h02"] is st["h03"] is Status.REMEDIATED
    assert [st[h] for h in ("h04", "h05")] == [Status.SKIPPED] * 2
    assert {skip_reason(r) for r in out.results if r.status is Status.SKIPPED} == {"max_fail"}
    notes = [e["detail"] for e in store.events(out.info.id) if e["state"] == "note"]
    assert notes and "batch 2" in notes[0] and "1 of 3" in notes[0]
    assert engine.machines["h04"].installs == 0
    assert exit_code(out.results) == 4
    [failed] = [r for r in store.intents(out.info.id) if r["outcome"] == "failed"]
    assert (failed["host"], failed["exit_code"]) == ("h01", 1603)


def test_window_closing_midway_skips_hosts_that_would_overrun(store: AuditStore) -> None:
    hosts, engine = _setup(4, install_seconds=0.3)
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    now = datetime.now(timezone.utc)
    clock = [now]  # the run's clock: each install takes exactly its 0.3 s estimate, whatever the machine load

    def advance(_host: str) -> None:
        clock[0] += timedelta(seconds=0.3)

    engine.on_install = advance
    window = ChangeWindow(now - timedelta(seconds=1), now + timedelta(seconds=0.75))
    out = run_apply(hosts, engine, store, RunOptions(forks=1, window=window), plan=plan, clock=lambda: clock[0])
    st = [r.status for r in out.results]
    assert st[:2] == [Status.REMEDIATED] * 2  # 0.3 s each fits; the third would end past the window
    assert st[2:] == [Status.SKIPPED] * 2 and {skip_reason(r) for r in out.results[2:]} == {"window"}
    assert sum(m.installs for m in engine.machines.values()) == 2
    assert out.info.window == str(window)
    closed = ChangeWindow(now - timedelta(hours=2), now - timedelta(hours=1))
    late = run_apply(hosts[2:], engine, store, RunOptions(window=closed), plan=plan)
    assert {skip_reason(r) for r in late.results} == {"window"} and exit_code(late.results) == 3


def test_drift_skips_host(store: AuditStore) -> None:
    hosts, engine = _setup(2)
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    engine.machines["h01"].extra_fact = "changed"
    out = run_apply(hosts, engine, store, RunOptions(), plan=plan)
    assert out.results[0].status is Status.REMEDIATED
    assert out.results[1].status is Status.SKIPPED and skip_reason(out.results[1]) == "drift"
    assert "facts changed" in out.results[1].findings[0].reason
    assert engine.machines["h01"].installs == 0


def test_stop_lets_running_host_finish_and_marks_run_interrupted(store: AuditStore) -> None:
    hosts, engine = _setup(4, install_seconds=0.3)
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    control = RunControl()
    engine.on_install = lambda h: control.request_stop("SIGINT") if h == "h00" else None
    out = run_apply(hosts, engine, store, RunOptions(forks=1), plan=plan, control=control)
    assert out.info.state == "interrupted"
    assert out.results[0].status is Status.REMEDIATED  # mid-install when stopped: finished
    assert {skip_reason(r) for r in out.results[1:]} == {"interrupted"}
    assert engine.open == 0 and store.open_intents(out.info.id) == []
    assert [e["detail"] for e in store.events(out.info.id)][-1] == "SIGINT"


def test_resume_never_reruns_an_action_that_may_have_run(store: AuditStore) -> None:
    hosts, engine = _setup(3)
    plan = run_plan(hosts, engine, store, RunOptions()).plan

    def crash(host: str) -> None:
        if host == "h01":  # intent committed, the installer "runs", then the controller dies
            engine.machines[host].fixed = True
            engine.machines[host].installs += 1
            raise SystemExit("killed")

    engine.on_install = crash
    first = run_apply(hosts, engine, store, RunOptions(forks=1, serial=parse_serial("2")), plan=plan)
    [open_] = store.open_intents(first.info.id)
    assert open_.host == "h01"
    engine.on_install = lambda _h: None
    resumed = run_apply(hosts, engine, store, RunOptions(), resume=first.info.id)
    assert store.open_intents(first.info.id) == []  # closed as unknown by the resume
    assert [r["outcome"] for r in store.intents(first.info.id) if r["host"] == "h01"] == ["unknown"]
    by = {r.host: r for r in resumed.results}
    assert set(by) == {"h01"}  # h00 and h02 finished in the first run
    assert by["h01"].status is Status.REMEDIATED  # re-read: the interrupted installer had run (fixed by it)
    assert engine.machines["h01"].installs == 1 and engine.machines["h00"].installs == 1
    assert store.resumes(resumed.info.id) == first.info.id


def test_resume_does_not_rerun_unknown_action_on_unfixed_host(store: AuditStore) -> None:
    hosts, engine = _setup(1)
    plan = run_plan(hosts, engine, store, RunOptions()).plan

    def crash(_host: str) -> None:
        raise SystemExit("killed before the installer started")

    engine.on_install = crash
    first = run_apply(hosts, engine, store, RunOptions(), plan=plan)
    engine.on_install = lambda _h: None
    resumed = run_apply(hosts, engine, store, RunOptions(), resume=first.info.id)
    assert resumed.results[0].status is Status.UNKNOWN
    assert "not re-run" in resumed.results[0].findings[0].reason
    assert engine.machines["h00"].installs == 0
    again = run_apply(hosts, engine, store, RunOptions(), plan=run_plan(hosts, engine, store, RunOptions()).plan)
    assert again.results[0].status is Status.REMEDIATED


def test_unreachable_host_and_inventory_skip(store: AuditStore) -> None:
    hosts, engine = _setup(3)
    engine.machines["h01"].down = True
    hosts[2] = replace(hosts[2], skipped_reason="decommissioned", endpoint=None)
    out = run_check(hosts, engine, store, RunOptions())
    assert out.results[1].status is Status.FAILED and "refused" in out.results[1].error.message  # type: ignore[union-attr]
    assert out.results[2].status is Status.SKIPPED
    assert exit_code(out.results) == 4
    assert exit_code([out.results[0], out.results[2]]) == 3


def test_locked_host_is_skipped_naming_holder(store: AuditStore) -> None:
    hosts, engine = _setup(2)
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    store.lock_hosts("other-run", ["h01"])  # this process is alive: not stale
    try:
        out = run_apply(hosts, engine, store, RunOptions(), plan=plan)
    finally:
        store.unlock_hosts("other-run")
    assert out.results[0].status is Status.REMEDIATED
    assert skip_reason(out.results[1]) == "locked" and "other-run" in out.results[1].findings[0].reason
    assert engine.machines["h01"].installs == 0


def test_new_apply_after_crash_does_not_repeat_an_action_with_unknown_outcome(store: AuditStore) -> None:
    hosts, engine = _setup(1)
    plan = run_plan(hosts, engine, store, RunOptions()).plan

    def crash(_host: str) -> None:
        raise SystemExit("killed while the installer may be running")

    engine.on_install = crash
    first = run_apply(hosts, engine, store, RunOptions(), plan=plan)
    assert len(store.open_intents(first.info.id)) == 1
    engine.on_install = lambda _h: None
    second = run_apply(hosts, engine, store, RunOptions(), plan=plan)  # a new run, same plan
    assert second.results[0].status is Status.UNKNOWN
    assert engine.machines["h00"].installs == 0
    assert store.open_intents(first.info.id) == []
    third = run_apply(hosts, engine, store, RunOptions(), plan=plan)  # the operator checked: go
    assert third.results[0].status is Status.REMEDIATED and engine.machines["h00"].installs == 1


def test_resume_never_reruns_an_installer_that_reported_success(store: AuditStore) -> None:
    hosts, engine = _setup(1)
    engine.machines["h00"].fixes = False  # exit 0, DLL unchanged
    plan = run_plan(hosts, engine, store, RunOptions()).plan
    first = run_apply(hosts, engine, store, RunOptions(), plan=plan)
    assert first.results[0].status is Status.FAILED  # verify saw the old state
    resumed = run_apply(hosts, engine, store, RunOptions(), resume=first.info.id)
    assert engine.machines["h00"].installs == 1
    assert resumed.results[0].status is Status.FAILED
    assert "already succeeded" in resumed.results[0].findings[0].reason


def test_max_fail_counts_failures_not_hosts_that_need_work(store: AuditStore) -> None:
    hosts, engine = _setup(4)  # every host non-compliant: work to do, nothing failed
    steps = parse_serial("1")
    out = run_check(hosts, engine, store, RunOptions(serial=steps, max_fail_percent=0))
    assert [r.status for r in out.results] == [Status.NON_COMPLIANT] * 4  # no max-fail stop
    engine.machines["h00"].down = True  # a real failure in batch 1 stops the rest
    out = run_check(hosts, engine, store, RunOptions(serial=steps, max_fail_percent=0))
    assert out.results[0].status is Status.FAILED
    assert {skip_reason(r) for r in out.results[1:]} == {"max_fail"}
