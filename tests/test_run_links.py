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


def test_a_checks_relinked_row_is_stored_with_its_group_before_the_end(tmp_path: Path, store: AuditStore) -> None:
    """A check defers its relinked `final` rows like the others (issue 19): the run's rows as read
    back are its final table, the relinked row follows the client's first one, the chain holds."""
    calls: list[tuple[str, bool]] = []
    record = store.record_host

    def spy(run_id: str, result: HostResult, **kw: object) -> int | None:
        calls.append((result.host, bool(kw.get("defer"))))
        return record(run_id, result, **kw)  # type: ignore[arg-type]

    store.record_host = spy  # type: ignore[method-assign]
    with Lab([h for h in demo_site() if h.name in PAIR]) as lab:
        hosts = _pair(lab, tmp_path)
        out = run_check(hosts, PlaybookEngine(), store, RunOptions())
    assert sorted(calls) == [("OFFICE-CL01", True), ("OFFICE-CL01", True), ("WSUS-SP1", True)]  # the relinked one too
    client = next(r for r in out.results if r.host == "OFFICE-CL01")
    assert any(f.linked_host == "WSUS-SP1" for f in client.findings)
    assert store._deferred == []  # nothing left waiting once the run has ended
    assert {r.host: r.findings for r in store.host_results(out.info.id)} == {r.host: r.findings for r in out.results}
    rows = store._query("SELECT host FROM host_results WHERE run_id=:r ORDER BY seq", {"r": out.info.id})
    assert [r["host"] for r in rows].count("OFFICE-CL01") == 2 and rows[-1]["host"] == "OFFICE-CL01"
    events = store._query("SELECT seq, state FROM run_events WHERE run_id=:r ORDER BY seq", {"r": out.info.id})
    assert [e["state"] for e in events] == ["running", "completed"]
    last_row = store._query("SELECT MAX(c.seq) AS s FROM chain c WHERE c.tbl='host_results'")[0]["s"]
    end_event = store._query("SELECT seq FROM chain WHERE tbl='run_events' AND row_id=:e", {"e": events[-1]["seq"]})[0]["seq"]
    assert last_row < end_event  # the relinked row was committed before the run's end event
    assert store.verify_chain().ok
