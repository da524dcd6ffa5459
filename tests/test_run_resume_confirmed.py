"""A host abandoned mid-install (intent journalled, no result) comes back from `--resume` as
`remediated`, not `compliant`, when the re-read shows it fixed (lab over real WinRM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inventory import load_inventory
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import Finding, HostResult, Status
from tests.test_run_lab import make_packages
from winlab.fixtures import demo_site
from winlab.lab import Lab

HOST = "WSUS-SP1"


class _DiesAfterSend:
    """A journal whose result is never written: the controller died after the installer ran."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal

    def intent(self, host: str, action: Any) -> None:
        self._journal.intent(host, action)

    def result(self, host: str, action: Any, executed: Any) -> None:
        raise RuntimeError("controller died before the answer was recorded")


class _Abandons(PlaybookEngine):
    def apply(self, session: Any, host: Any, result: HostResult, journal: Any, should_stop: Any) -> list[Finding]:
        return super().apply(session, host, result, _DiesAfterSend(journal), should_stop)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore.in_dir(tmp_path / "state") as s:
        yield s


def test_resume_of_a_host_fixed_by_the_interrupted_install_reads_remediated(tmp_path: Path, store: AuditStore) -> None:
    packages = make_packages(tmp_path / "pkgs")
    with Lab([h for h in demo_site() if h.name == HOST]) as lab:
        hosts = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")]).select(None)
        plan = run_plan(hosts, PlaybookEngine(packages_dir=packages), store, RunOptions()).plan
        assert plan is not None
        first = run_apply(hosts, _Abandons(packages_dir=packages), store, RunOptions(), plan=plan)
        assert first.results[0].status is Status.FAILED  # the installer ran on the host; its answer was lost
        assert len(store.open_intents(first.info.id)) == 1
        second = run_apply(hosts, PlaybookEngine(packages_dir=packages), store, RunOptions(), resume=first.info.id)
    [result] = second.results
    assert result.status is Status.REMEDIATED
    finding = result.finding("KB954960")
    assert finding is not None and finding.status is Status.REMEDIATED
    assert any(e.note and "confirmed by re-reading the host after the interruption" in e.note
               for e in finding.evidence)
    assert store.intents(second.info.id) == []  # nothing was installed again
