"""WSUS client links against the lab (real WinRM over loopback): the display's totals agree
with the final table, a stop still links the hosts that finished, and a resume relinks the
clients of the servers it completes (OFFICE-CL01's WUServer is WSUS-SP1 in the demo site)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory import load_inventory
from kbfix.fleet import fleet_state
from kbfix.progress import PlainProgress
from kbfix.run import RunControl, RunOptions, run_apply, run_check, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import HostResult, Status
from tests.test_run_lab import make_packages
from winlab.fixtures import demo_site
from winlab.lab import Lab

PAIR = ["WSUS-SP1", "OFFICE-CL01"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore.in_dir(tmp_path / "state") as s:
        yield s


def _pair(lab: Lab, tmp_path: Path) -> list:
    inv = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")])
    return [h for h in inv.select(None) if h.name in PAIR]


def _status(results: list[HostResult], host: str) -> Status:
    return next(r.status for r in results if r.host == host)


class _StopAfter(PlainProgress):
    """Plain lines; requests a stop (as Ctrl-C does) once `host` finished."""

    def __init__(self, control: RunControl, host: str) -> None:
        super().__init__(io.StringIO())
        self.control, self.host = control, host

    def host_done(self, result: HostResult) -> None:
        super().host_done(result)
        if result.host == self.host:
            self.control.request_stop("SIGINT")


def test_done_counts_agree_with_the_final_table(tmp_path: Path, store: AuditStore) -> None:
    engine = PlaybookEngine(packages_dir=make_packages(tmp_path / "pkgs"))
    with Lab([h for h in demo_site() if h.name in PAIR]) as lab:
        hosts = _pair(lab, tmp_path)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        shown = io.StringIO()
        out = run_apply(hosts, engine, store, RunOptions(), plan=plan, progress=PlainProgress(shown))
    assert {r.host: r.status for r in out.results} == {"WSUS-SP1": Status.REMEDIATED, "OFFICE-CL01": Status.REMEDIATED}
    lines = shown.getvalue().splitlines()
    assert lines[-1] == "done: remediated 2", lines
    assert "linked to their WSUS server after their line (the status the final table shows):" in lines
    assert any(line.startswith("OFFICE-CL01\tremediated\twas non_compliant; linked to WSUS server WSUS-SP1")
               for line in lines), lines


def test_a_stop_links_the_hosts_that_finished(tmp_path: Path, store: AuditStore) -> None:
    engine = PlaybookEngine(packages_dir=make_packages(tmp_path / "pkgs"))
    with Lab([h for h in demo_site() if h.name in PAIR]) as lab:
        hosts = _pair(lab, tmp_path)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        control = RunControl()
        # one batch with both hosts: the stop comes when the server is done, the client is done too
        out = run_apply(hosts, engine, store, RunOptions(forks=1), plan=plan, control=control,
                        progress=_StopAfter(control, "OFFICE-CL01"))
    assert out.info.state == "interrupted"
    assert _status(out.results, "OFFICE-CL01") is Status.REMEDIATED
    assert store.latest_statuses([out.info.id])["OFFICE-CL01"] is Status.REMEDIATED


def test_resume_relinks_the_clients_of_the_server_it_completes(tmp_path: Path, store: AuditStore) -> None:
    engine = PlaybookEngine(packages_dir=make_packages(tmp_path / "pkgs"))
    with Lab([h for h in demo_site() if h.name in PAIR]) as lab:
        hosts = _pair(lab, tmp_path)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        control = RunControl()
        first = run_apply(hosts, engine, store, RunOptions(batches=[["OFFICE-CL01"], ["WSUS-SP1"]]), plan=plan,
                          control=control, progress=_StopAfter(control, "OFFICE-CL01"))
        assert _status(first.results, "WSUS-SP1") is Status.SKIPPED  # Ctrl-C before its batch
        assert _status(first.results, "OFFICE-CL01") is Status.NON_COMPLIANT  # its server not fixed (yet)
        shown = io.StringIO()
        second = run_apply(hosts, engine, store, RunOptions(), resume=first.info.id, progress=PlainProgress(shown))
    assert _status(second.results, "WSUS-SP1") is Status.REMEDIATED
    assert _status(second.results, "OFFICE-CL01") is Status.REMEDIATED
    assert store.latest_statuses([first.info.id, second.info.id])["OFFICE-CL01"] is Status.REMEDIATED
    status = {s.host: (s.status, s.run_id) for s in fleet_state(store)}  # what `kbfix status` shows
    assert status["OFFICE-CL01"] == ("remediated", second.info.id)
    assert shown.getvalue().splitlines()[-1] == "done: remediated 2"


def test_a_checks_relinked_rows_wait_with_its_other_final_rows(tmp_path: Path, store: AuditStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 19: a check defers its relinked final rows as it does its other final rows (written in
    # groups); they are still stored after the host's first row, so the linked verdict is the one read.
    calls: list[tuple[str, bool, str | None]] = []
    record = store.record_host

    def spy(run_id: str, result: HostResult, **kw: object) -> int | None:
        calls.append((result.host, bool(kw.get("defer")), next((f.linked_host for f in result.findings if f.linked_host), None)))
        return record(run_id, result, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "record_host", spy)
    engine = PlaybookEngine()
    with Lab([h for h in demo_site() if h.name in PAIR]) as lab:
        out = run_check(_pair(lab, tmp_path), engine, store, RunOptions())
    client = [c for c in calls if c[0] == "OFFICE-CL01"]
    assert client == [("OFFICE-CL01", True, None), ("OFFICE-CL01", True, "WSUS-SP1")]
    stored = {r.host: r for r in store.host_results(out.info.id)}
    assert stored["OFFICE-CL01"].finding("KB954960").linked_host == "WSUS-SP1"  # type: ignore[union-attr]
    assert stored["OFFICE-CL01"].findings == next(r for r in out.results if r.host == "OFFICE-CL01").findings
    assert store.verify_chain().ok
