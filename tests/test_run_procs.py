"""--procs (issue 19): check-mode contact work in child processes, through the lab.

The children load the inventory themselves; what crosses the process boundary is read here
byte for byte and must hold none of the inventory's secrets; the statuses, findings and error
kinds must be those of a run in one process (the demo site has healthy hosts, a refused
connection and a rejected login)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.run import RunOptions, run_check, run_plan
from kbfix.run import procs as procs_mod
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.run.procs import ContactPool, InventorySpec, ProcsEngine, procs_for
from kbfix.store import AuditStore
from remoting.lean_http import ntowfv1
from winlab.fixtures import demo_site
from winlab.lab import Lab


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Lab]]:
    tmp = tmp_path_factory.mktemp("procs")
    with Lab(demo_site()) as lab:
        yield lab.write_inventory(tmp / "inventory.yaml", transport="ntlm"), lab


def _summary(results: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.host, r.status.value, r.error.kind.value if r.error else None, r.facts_digest,
             [(f.advisory, f.status.value, f.reason) for f in r.findings]) for r in results]


def test_two_processes_give_the_statuses_of_one(lab_inventory: tuple[Path, Lab], tmp_path: Path) -> None:
    inv_path, _lab = lab_inventory
    hosts = list(load_inventory([inv_path]).select(None))
    with AuditStore.in_dir(tmp_path / "state") as store:
        one = run_check(hosts, PlaybookEngine(), store, RunOptions(forks=8))
        with ContactPool(InventorySpec((str(inv_path),)), 2, 8) as pool:
            two = run_check(hosts, ProcsEngine(pool, PlaybookEngine()), store, RunOptions(forks=8))
            planned = run_plan(hosts, ProcsEngine(pool, PlaybookEngine()), store, RunOptions(forks=8))
        assert {r.host for r in two.results if r.error} and {r.host for r in two.results if not r.error}
        assert _summary(two.results) == _summary(one.results)
        assert [r.host for r in two.results] == [h.name for h in hosts]  # inventory order
        assert {r.status for r in planned.results} == {r.status for r in one.results}
        stored = {r.host: r.status for r in store.host_results(two.info.id)}
        assert stored == {r.host: r.status for r in one.results}


def test_no_secret_crosses_the_process_boundary(lab_inventory: tuple[Path, Lab], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    inv_path, _lab = lab_inventory
    hosts = list(load_inventory([inv_path]).select(None))
    secrets = set()
    for h in hosts:
        if h.endpoint is not None and h.endpoint.password is not None:
            pw = h.endpoint.password.reveal()
            secrets |= {pw.encode("utf-8"), pw.encode("utf-16-le"), ntowfv1(pw).hex().encode(), ntowfv1(pw)}
    assert secrets
    crossed: list[bytes] = []
    real_dumps, real_loads = procs_mod._dumps, procs_mod._loads

    def dumps(obj: Any) -> bytes:
        data = real_dumps(obj)
        crossed.append(data)
        return data

    def loads(data: bytes) -> Any:
        crossed.append(data)
        return real_loads(data)

    monkeypatch.setattr(procs_mod, "_dumps", dumps)
    monkeypatch.setattr(procs_mod, "_loads", loads)
    with AuditStore.in_dir(tmp_path / "state") as store, ContactPool(InventorySpec((str(inv_path),)), 2, 4) as pool:
        out = run_check(hosts, ProcsEngine(pool, PlaybookEngine()), store, RunOptions(forks=4))
    assert len(out.results) == len(hosts)
    # the spec, one task and one answer per contacted host
    contacted = sum(1 for h in hosts if h.endpoint is not None)
    assert len(crossed) >= 1 + 2 * contacted
    leaked = [s for s in secrets for data in crossed if s in data]
    assert leaked == []


def test_a_contact_process_that_cannot_start_fails_its_hosts_not_the_run(lab_inventory: tuple[Path, Lab],
                                                                         tmp_path: Path) -> None:
    inv_path, _lab = lab_inventory
    hosts = list(load_inventory([inv_path]).select(None))[:3]
    with AuditStore.in_dir(tmp_path / "state") as store, \
            ContactPool(InventorySpec((str(tmp_path / "missing.yaml"),)), 2, 4) as pool:
        out = run_check(hosts, ProcsEngine(pool, PlaybookEngine()), store, RunOptions(forks=4, host_deadline_s=60))
    assert [r.status.value for r in out.results] == ["unreachable"] * 3
    assert all("contact process" in (r.error.message if r.error else "") for r in out.results)


def test_procs_for_keeps_small_runs_and_typed_secrets_in_one_process() -> None:
    assert procs_for(2, 1000, 100) == 2
    assert procs_for(8, 450, 100) == 2  # at least 200 hosts per process
    assert procs_for(2, 150, 100) == 1
    assert procs_for(4, 1000, 3) == 3  # never more processes than forks
    assert procs_for(2, 1000, 100, interactive_secrets=True) == 1


def test_procs_is_a_global_option_with_help() -> None:
    runner = CliRunner()
    for args in (["--help"], ["check", "--help"]):
        text = re.sub(r"\x1b\[[0-9;]*m", "", runner.invoke(app, args, terminal_width=200).output)
        assert "--procs" in text and "apply stays in one process" in " ".join(text.split())


def test_the_forkserver_warm_up_leaves_every_playbook_expression_compiled() -> None:
    """What the contact children inherit from the forkserver (kbfix.run.contact_warmup): after it
    is imported, building the engine a child builds compiles no expression again. Run in a fresh
    interpreter, as the forkserver is one."""
    import subprocess
    import sys

    code = (
        "import kbfix.run.contact_warmup as w\n"
        "from playbooks import conditions as c\n"
        "from kbfix.run.playbook_engine import PlaybookEngine\n"
        "warm = c._compiled.cache_info()\n"
        "PlaybookEngine()\n"
        "after = c._compiled.cache_info()\n"
        "print(w.WARMED, warm.currsize, after.misses - warm.misses)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 20  # the built-in playbooks' and roles' conditions
    assert out[2] == "0"


def test_the_forkserver_preloads_the_cli_only_for_a_run_the_cli_started() -> None:
    """Children re-run the parent's main script (multiprocessing's preparation): for the `kbfix`
    console script that imports kbfix.cli, so the forkserver imports it first, once."""
    assert procs_mod.forkserver_preload({}) == list(procs_mod.PRELOAD)
    with_cli = procs_mod.forkserver_preload({"kbfix.cli": object()})
    assert with_cli[-1] == "kbfix.cli" and with_cli[:-1] == list(procs_mod.PRELOAD)
    import importlib

    for name in with_cli:  # every name is a module that imports
        importlib.import_module(name)
