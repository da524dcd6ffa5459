"""`kbfix demo`: the whole job on the embedded lab, for a newcomer's first minute.

Starts winlab in-process with the demo site (HTTPS with a generated CA, NTLM — kbfix's
defaults), then runs check → plan → apply (→ verify) → check over real WinRM exactly as the
CLI does, writes the reports (HTML, JSON, Markdown, CSV) and the reviewed plan into the output
folder, prints one line per host and the path of the HTML report. The demo checks itself: each
host must end in the status `winlab/fixtures/demo-expected.yaml` says its fixture intends, the
re-check must send no mutating op, and no shell may be left open; otherwise it exits 1.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from inventory import load_inventory
from kbfix.report.record import document_for_run, write_recorded
from kbfix.run import RunOptions, run_apply, run_check, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import HostResult
from winlab.fixtures import demo_site
from winlab.lab import Lab
from winlab.standin_packages import write_standin_packages

EXPECTED_PATH = Path(__file__).resolve().parents[1] / "winlab" / "fixtures" / "demo-expected.yaml"
REPORT_FORMATS = ("html", "json", "md", "csv")


@dataclass(frozen=True)
class DemoOutcome:
    """What the demo did: the report paths, per-host (check, final) statuses, mismatches against
    the expectations (empty = the demo behaved), mutating ops seen during the final re-check,
    shells left open, and wall seconds."""

    out_dir: Path
    reports: dict[str, Path]
    plan_path: Path
    statuses: dict[str, tuple[str, str]]
    mismatches: list[str]
    recheck_mutations: int
    shells_left_open: int
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every host matched its expectation and nothing leaked or mutated on re-check."""
        return not self.mismatches and self.recheck_mutations == 0 and self.shells_left_open == 0


def load_expectations(path: Path = EXPECTED_PATH) -> dict[str, dict[str, str]]:
    """`{host: {"check": status, "final": status}}` from the demo expectations YAML.
    Raises ValueError naming the file when it is malformed."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, dict):
        raise ValueError(f"{path}: expected a mapping under 'hosts'")
    return {str(k): {"check": str(v["check"]), "final": str(v["final"])} for k, v in hosts.items()}


def compare(expected: Mapping[str, Mapping[str, str]], first: Sequence[HostResult], final: Sequence[HostResult]) -> list[str]:
    """Mismatches between expectations and the results of the first and final checks, one
    sentence each (empty when everything is as the fixtures intend)."""
    got_first = {r.host: r.status.value for r in first}
    got_final = {r.host: r.status.value for r in final}
    problems = []
    for host, want in expected.items():
        for phase, got in (("check", got_first.get(host)), ("final", got_final.get(host))):
            if got != want[phase]:
                problems.append(f"{host}: {phase} status {got}, expected {want[phase]}")
    for host in sorted(set(got_first) - set(expected)):
        problems.append(f"{host}: no expectation in {EXPECTED_PATH.name}")
    return problems


def run_demo(out_dir: Path, *, lang: str = "en", forks: int = 20, echo: Callable[[str], None] = print) -> DemoOutcome:
    """Run the demo into `out_dir` (created; earlier files overwritten). `echo` receives
    progress lines. Returns the outcome; raises only on internal errors (the CLI maps them to 1)."""
    t0 = time.perf_counter()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = load_expectations()
    packages = write_standin_packages(out_dir / "packages")
    with tempfile.TemporaryDirectory(prefix="kbfix-demo-lab-") as tmp, Lab(demo_site(), https=True, workdir=Path(tmp)) as lab:
        # The inventory carries the lab account's password: keep it out of the output folder.
        inventory = load_inventory([lab.write_inventory(Path(tmp) / "inventory.yaml", transport="ntlm")])
        hosts = inventory.select(None)
        engine = PlaybookEngine(packages_dir=packages)
        options = RunOptions(forks=forks, inventory_hash=inventory.digest, recorded={"demo": True, "forks": forks})
        echo(f"lab: {len(hosts)} emulated hosts over HTTPS (CA {lab.endpoints[hosts[0].name].ca_path}), NTLM")
        with AuditStore.in_dir(out_dir / "state") as store:
            first = run_check(hosts, engine, store, options)
            echo(f"check  {first.info.id}: {_counts(first.results)}")
            planned = run_plan(hosts, engine, store, options)
            assert planned.plan is not None  # run_plan always returns its plan document
            plan_path = planned.plan.write(out_dir / "plan.json")
            echo(f"plan   {planned.info.id}: {planned.plan.action_count} actions, written to {plan_path}")
            applied = run_apply(hosts, engine, store, options, plan=planned.plan)
            echo(f"apply  {applied.info.id}: {_counts(applied.results)}")
            before = {n: len(lab.records(n).mutations) for n in lab.endpoints}
            final = run_check(hosts, engine, store, options)
            echo(f"check  {final.info.id}: {_counts(final.results)}")
            recheck_mutations = sum(len(lab.records(n).mutations) - before[n] for n in lab.endpoints)
            # evidence (issue 15): the document from the store, each report's SHA-256 recorded there
            doc = document_for_run(store, applied.info, applied.results, engine.advisories())
            reports = {}
            for fmt in REPORT_FORMATS:
                reports[fmt] = out_dir / f"report.{fmt}"
                write_recorded(store, doc, reports[fmt], lang=lang)
        shells = lab.open_shells()
    final_by_host = {r.host: r.status.value for r in final.results}
    statuses = {r.host: (r.status.value, final_by_host.get(r.host, "missing")) for r in first.results}
    return DemoOutcome(
        out_dir=out_dir,
        reports=reports,
        plan_path=plan_path,
        statuses=statuses,
        mismatches=compare(expected, first.results, final.results),
        recheck_mutations=recheck_mutations,
        shells_left_open=shells,
        seconds=time.perf_counter() - t0,
    )


def _counts(results: Sequence[HostResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
