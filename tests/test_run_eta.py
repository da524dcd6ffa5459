"""apply hands the plan's per-host estimates to the display, for its time left (lab, real WinRM)."""

from __future__ import annotations

import io
from pathlib import Path

from inventory import load_inventory
from kbfix.progress import PlainProgress
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from tests.test_run_lab import make_packages
from winlab.fixtures import demo_site
from winlab.lab import Lab

NAMES = ["WSUS-SP1", "HEALTHY-CL02"]


class _Recording(PlainProgress):
    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.estimates: dict[str, float] | None = None

    def plan_estimates(self, estimates: dict[str, float]) -> None:
        self.estimates = estimates


def test_apply_passes_the_plans_estimates_to_the_display(tmp_path: Path) -> None:
    engine = PlaybookEngine(packages_dir=make_packages(tmp_path / "pkgs"))
    with AuditStore.in_dir(tmp_path / "state") as store, Lab([h for h in demo_site() if h.name in NAMES]) as lab:
        hosts = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")]).select(None)
        plan = run_plan(hosts, engine, store, RunOptions()).plan
        assert plan is not None
        shown = _Recording()
        run_apply(hosts, engine, store, RunOptions(), plan=plan, progress=shown)
    expected = {e.host: e.estimated_seconds for e in plan.hosts}
    assert shown.estimates == expected
    assert shown.estimates["WSUS-SP1"] > 0 and shown.estimates["HEALTHY-CL02"] == 0  # nothing to install
