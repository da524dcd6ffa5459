"""--procs left to kbfix (issue 19): one process until it is CPU-bound with a core idle, then a
contact pool for the hosts opened from then on — through the lab, statuses as in one process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory import load_inventory
from kbfix.run import RunOptions, run_check
from kbfix.run import procs_auto as auto
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.run.procs import InventorySpec, ProcsEngine, spread
from kbfix.run.procs_auto import AdaptiveEngine, CpuMeter, LoadSample, parse_proc_stat, wants_more_processes
from kbfix.store import AuditStore
from winlab.fixtures import demo_site
from winlab.lab import Lab

# /proc/stat of a 2-CPU Linux machine (proc(5)): cpu user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """cpu  4705 356 584 3699176 23060 0 277 0 0 0
cpu0 1393 280 319 1850255 11598 0 104 0 0 0
cpu1 3312 76 265 1848921 11462 0 173 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
ctxt 1990473
btime 1062191376
"""


class FixedMeter:
    """Load readings given by the test: the same LoadSample for every window."""

    def __init__(self, sample: LoadSample) -> None:
        self.value = sample
        self.calls = 0

    def sample(self) -> LoadSample | None:
        self.calls += 1
        return self.value


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("procs-auto")
    with Lab(demo_site()) as lab:
        yield lab.write_inventory(tmp / "inventory.yaml", transport="ntlm")


def _summary(results: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.host, r.status.value, r.error.kind.value if r.error else None, r.facts_digest,
             [(f.advisory, f.status.value, f.reason) for f in r.findings]) for r in results]


def test_proc_stat_cpu_line_gives_idle_and_total_ticks() -> None:
    assert parse_proc_stat(PROC_STAT) == (3699176 + 23060, 4705 + 356 + 584 + 3699176 + 23060 + 0 + 277 + 0)
    assert parse_proc_stat("cpu0 1 2 3 4\n") is None  # a per-CPU line is not the machine's
    assert parse_proc_stat("cpu 1 2 x 4\n") is None
    assert parse_proc_stat("cpu 1 2 3\n") is None
    assert parse_proc_stat("cpu 1 2 -3 4\n") is None
    assert parse_proc_stat("") is None


@given(st.lists(st.integers(min_value=0, max_value=2**63), min_size=4, max_size=12),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_proc_stat_parse_reads_any_cpu_line(ticks: list[int], noise: str) -> None:
    lines = [f"cpu  {' '.join(map(str, ticks))}", *(f"x{line}" for line in noise.splitlines())]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    assert parse_proc_stat("\n".join(lines)) == (idle, sum(ticks[:8]))


def test_meter_reports_this_process_busy_and_the_machines_idle_cores() -> None:
    stats = iter([(1000, 2000), (1100, 2400)])  # 100 idle of 400 ticks in the window: a quarter idle
    meter = CpuMeter(0.05, cores=4, read_stat=lambda: next(stats))
    assert meter.sample() is None  # the window has not passed yet
    end = time.monotonic() + 0.1
    while time.monotonic() < end:  # burn CPU: this process is busy
        pass
    sample = meter.sample()
    assert sample is not None
    assert sample.busy > 0.5
    assert sample.idle_cores == pytest.approx(1.0)
    meter_without_stat = CpuMeter(0.0, cores=2, read_stat=lambda: None)
    time.sleep(0.01)
    quiet = meter_without_stat.sample()
    assert quiet is not None and quiet.idle_cores is None and quiet.busy < 0.5


def test_more_processes_only_when_cpu_bound_with_a_core_idle() -> None:
    assert wants_more_processes(LoadSample(0.95, 1.0))
    assert wants_more_processes(LoadSample(0.95, None))  # cannot see other load: assume a core is free
    assert not wants_more_processes(LoadSample(0.6, 1.2))  # waiting on the network, not on the CPU
    assert not wants_more_processes(LoadSample(0.97, 0.1))  # CPU-bound, but the cores are taken (the lab)


def test_spread_left_to_kbfix_starts_in_one_process(lab_inventory: Path) -> None:
    spec = InventorySpec((str(lab_inventory),))
    with spread(PlaybookEngine(), 1000, procs=0, forks=100, spec=spec) as engine:
        assert isinstance(engine, AdaptiveEngine) and engine.pool is None
    with spread(PlaybookEngine(), 1000, procs=2, forks=100, spec=spec) as engine:
        assert isinstance(engine, ProcsEngine)
    with spread(PlaybookEngine(), 150, procs=0, forks=100, spec=spec) as engine:
        assert type(engine) is PlaybookEngine  # too few hosts to ever pay for a process
    with spread(PlaybookEngine(), 1000, procs=0, forks=100, spec=spec, interactive_secrets=True) as engine:
        assert type(engine) is PlaybookEngine


def test_a_cpu_bound_run_moves_its_later_hosts_to_contact_processes(lab_inventory: Path, tmp_path: Path) -> None:
    hosts = list(load_inventory([lab_inventory]).select(None))
    contacted = sum(1 for h in hosts if h.endpoint is not None)
    meter = FixedMeter(LoadSample(busy=1.0, idle_cores=1.0))
    with AuditStore.in_dir(tmp_path / "state") as store:
        one = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=1))
        engine = AdaptiveEngine(PlaybookEngine(), InventorySpec((str(lab_inventory),)), hosts=len(hosts), forks=1,
                                meter=meter, background=False, min_hosts_left=0, procs=2)
        try:
            adaptive = run_check(hosts, engine, store, RunOptions(forks=1))
        finally:
            engine.close()
    assert engine.pool is not None and engine.pool.procs == 2
    # forks 1: the first contacted host is judged here (one CPU-bound window), the second window
    # starts the pool and every host from then on goes to it
    assert engine.in_children == contacted - (auto.SATURATED_WINDOWS - 1)
    assert _summary(adaptive.results) == _summary(one.results)
    assert engine.pool.children_cpu_s > 0  # the children did work and said so when they stopped


def test_a_run_that_waits_on_the_network_stays_in_one_process(lab_inventory: Path, tmp_path: Path) -> None:
    hosts = list(load_inventory([lab_inventory]).select(None))
    meter = FixedMeter(LoadSample(busy=0.4, idle_cores=1.5))
    with AuditStore.in_dir(tmp_path / "state") as store:
        engine = AdaptiveEngine(PlaybookEngine(), InventorySpec((str(lab_inventory),)), hosts=len(hosts), forks=4,
                                meter=meter, background=False, min_hosts_left=0, procs=2)
        out = run_check(hosts, engine, store, RunOptions(forks=4))
        engine.close()
    assert meter.calls > 0 and engine.pool is None and engine.in_children == 0
    assert len(out.results) == len(hosts)


def test_a_pool_started_in_the_background_serves_the_rest_and_is_stopped(lab_inventory: Path,
                                                                        tmp_path: Path) -> None:
    hosts = list(load_inventory([lab_inventory]).select(None))
    meter = FixedMeter(LoadSample(busy=1.0, idle_cores=None))
    with AuditStore.in_dir(tmp_path / "state") as store:
        one = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=2))
        engine = AdaptiveEngine(PlaybookEngine(), InventorySpec((str(lab_inventory),)), hosts=len(hosts), forks=2,
                                meter=meter, min_hosts_left=0, procs=2)
        try:
            out = run_check(hosts, engine, store, RunOptions(forks=2))
        finally:
            engine.close()
    assert engine.pool is not None  # started (perhaps after the last host was opened) and closed
    assert all(not c.process.is_alive() for c in engine.pool._children) and engine.pool._children == []
    assert _summary(out.results) == _summary(one.results)


def test_hosts_go_on_in_this_process_when_the_contact_processes_stop(lab_inventory: Path, tmp_path: Path) -> None:
    hosts = list(load_inventory([lab_inventory]).select(None))
    contacted = [h for h in hosts if h.endpoint is not None]
    meter = FixedMeter(LoadSample(busy=1.0, idle_cores=1.0))
    # children that cannot load their inventory stop at once: the hosts sent to them before that
    # is seen are unreachable; every later one is judged here as without processes
    with AuditStore.in_dir(tmp_path / "state") as store:
        one = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=1))
        engine = AdaptiveEngine(PlaybookEngine(), InventorySpec((str(tmp_path / "missing.yaml"),)), hosts=len(hosts),
                                forks=1, meter=meter, background=False, min_hosts_left=0, procs=2)
        try:
            out = run_check(hosts, engine, store, RunOptions(forks=1, host_deadline_s=60))
        finally:
            engine.close()
    lost = [r.host for r in out.results if r.error and "contact process" in r.error.message]
    assert len(lost) == engine.in_children and len(lost) < len(contacted) - 1
    rest = [s for s in _summary(out.results) if s[0] not in lost]
    assert rest == [s for s in _summary(one.results) if s[0] not in lost]
