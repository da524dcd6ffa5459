"""Fleet benchmark: `kbfix check` (and optionally plan + apply) over N lab hosts, against the
physical limit.

    .venv/bin/python benchmarks/fleet.py                      # 1000 hosts, forks 100, 20 ms, 300 ms
    .venv/bin/python benchmarks/fleet.py --scale 100,300,1000,3000
    .venv/bin/python benchmarks/fleet.py --hosts 1000 --apply --serial 10%
    .venv/bin/python benchmarks/fleet.py --hosts 100 --naive  # side by side with one run_ps per probe

The lab runs in a child process (so the controller's CPU and memory are measured alone):
N clones of the demo site (`winlab.fixtures.clone_site`) with only the injected latency
(`--latency-ms` on every HTTP response, `--ps-start-ms` on every powershell.exe start), plus one
host with no injected latency used to measure the agent work of one host round trip.
Transport is Basic over HTTP (lab only) as in DESIGN.md's measurements; `--transport ntlm`
measures NTLM with message encryption.

Printed per run: wall seconds; the physical limit ceil(N/forks) × (requests per host × latency
+ powershell start + agent work) and the ratio (target ≤ 1.3); controller CPU ms per host
(target ≤ 5) and the lab's; the CPU bound (the busier of controller and lab, each one Python
process, or their sum over the cores); controller peak RSS; HTTP requests and KiB per host (from
the lab's records); shells left open. Note: the lab's CPU includes the base64/XML work of the real
agent's 50 KB script on every host, since the lab checks it byte for byte.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import table_lines  # after the path insert: runnable as a script

BASE = "BASELINE"


# ---- the lab child process -------------------------------------------------------------------------


def serve_lab(args: argparse.Namespace) -> int:
    """Child mode: serve N clones + BASELINE, write the inventory, print READY, wait for stdin to
    close, then write the per-host records as JSON to --records-out."""
    from winlab.faults import Faults
    from winlab.fixtures import clone_site, demo_site
    from winlab.lab import Lab

    # The demo site's fault hosts (refused, auth reject) have no files behind their registry: as
    # clones without their faults they would only add `unknown` verdicts. Fault runs: tests/.
    template = [h for h in demo_site() if h.faults == Faults()]
    hosts = clone_site(template, args.serve_lab)
    for h in hosts:
        h.faults = Faults(latency_ms=args.latency_ms, ps_start_ms=args.ps_start_ms)
        h.time_scale = args.time_scale
    base = clone_site(template[:1], 1)[0]
    base.name = BASE
    base.faults = Faults()
    with Lab([*hosts, base]) as lab:
        lab.write_inventory(Path(args.inventory_out), transport=args.transport)
        print("READY", flush=True)
        cpu0 = time.process_time()
        sys.stdin.read()  # the controller closes our stdin when it is done
        lab_cpu = time.process_time() - cpu0
        records = {h.name: lab.records(h.name).snapshot() for h in [*hosts, base]}
        records["__open_shells__"] = lab.open_shells()  # type: ignore[assignment]
        records["__lab_cpu_s__"] = lab_cpu  # type: ignore[assignment]
    Path(args.records_out).write_text(json.dumps(records), encoding="utf-8")
    return 0


class LabProcess:
    """The lab child process as a context manager: `.inventory` path; `.records()` after exit."""

    def __init__(self, n: int, args: argparse.Namespace, workdir: Path) -> None:
        self.inventory = workdir / "inventory.yaml"
        self._records = workdir / "records.json"
        self._cmd = [
            sys.executable, __file__, "--serve-lab", str(n), "--inventory-out", str(self.inventory),
            "--records-out", str(self._records), "--latency-ms", str(args.latency_ms),
            "--ps-start-ms", str(args.ps_start_ms), "--transport", args.transport,
            "--time-scale", str(args.time_scale),
        ]
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LabProcess:
        self._proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"lab process did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=120)

    def records(self) -> dict[str, Any]:
        """Per-host record snapshots written by the child when it stopped."""
        return json.loads(self._records.read_text(encoding="utf-8"))


# ---- the controller ---------------------------------------------------------------------------------


class BatchClock:
    """A runner Progress that notes when each batch starts (for apply's per-batch times)."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, int, float]] = []
        self.end = 0.0

    def start(self, kind: str, total: int, batches: int) -> None:
        pass

    def batch(self, index: int, hosts: int) -> None:
        self.starts.append((index, hosts, time.perf_counter()))

    def host_done(self, result: Any) -> None:
        self.end = time.perf_counter()

    def stop(self) -> None:
        self.end = time.perf_counter()

    def durations(self) -> list[tuple[int, float]]:
        """(hosts, seconds) per batch."""
        out = []
        for i, (_idx, n, t) in enumerate(self.starts):
            nxt = self.starts[i + 1][2] if i + 1 < len(self.starts) else self.end
            out.append((n, nxt - t))
        return out


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One fleet run of n hosts: check (and with --apply, plan + apply). Returns the figures."""
    from inventory import load_inventory
    from kbfix.rollout import parse_serial
    from kbfix.run import RunOptions, run_apply, run_check, run_plan
    from kbfix.run.playbook_engine import PlaybookEngine
    from kbfix.store import AuditStore
    from winlab.standin_packages import write_standin_packages

    with tempfile.TemporaryDirectory(prefix="kbfix-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        with LabProcess(n, args, tmp) as lab:
            inv = load_inventory([lab.inventory])
            hosts = [h for h in inv.select(None) if h.name != BASE]
            base = [h for h in inv.select(None) if h.name == BASE]
            engine = PlaybookEngine(packages_dir=write_standin_packages(tmp / "packages"))
            with AuditStore.in_dir(tmp / "state") as store:
                opts = RunOptions(forks=args.forks, host_deadline_s=120)
                agent_work = []
                for _ in range(5):
                    t = time.perf_counter()
                    run_check(base, engine, store, RunOptions(forks=1))
                    agent_work.append(time.perf_counter() - t)
                cpu0, t0 = time.process_time(), time.perf_counter()
                out = run_check(hosts, engine, store, opts)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                apply_fig: dict[str, Any] = {}
                if args.apply:
                    plan = run_plan(hosts, engine, store, opts)
                    clock = BatchClock()
                    t1 = time.perf_counter()
                    applied = run_apply(hosts, engine, store, RunOptions(forks=args.forks, host_deadline_s=600,
                                        serial=parse_serial(args.serial)), plan=plan.plan, progress=clock)
                    apply_fig = {
                        "apply_wall_s": round(time.perf_counter() - t1, 2),
                        "apply_batches": [(b, round(s, 2)) for b, s in clock.durations()],
                        "apply_statuses": _counts(applied.results),
                    }
        records = lab.records()
    per_host = [v for k, v in records.items() if k != BASE and not k.startswith("__")]
    check_requests = statistics.median(sum(r["requests"].values()) for r in per_host) if not args.apply else None
    reqs = check_requests if check_requests is not None else 6
    work = statistics.median(agent_work)
    limit = math.ceil(n / args.forks) * (reqs * args.latency_ms / 1000 + args.ps_start_ms / 1000 + work)
    # What 2 cores allow: the controller is one Python process (one core under the GIL) and the
    # lab another; the run cannot be faster than the busier of the two, nor than the cores allow.
    lab_cpu = float(records["__lab_cpu_s__"])
    cpu_bound = max(cpu, lab_cpu, (cpu + lab_cpu) / (os.cpu_count() or 1))
    return {
        "hosts": n,
        "forks": args.forks,
        "wall_s": round(wall, 2),
        "limit_s": round(limit, 2),
        "ratio": round(wall / limit, 2),
        "agent_work_ms": round(work * 1000, 1),
        "cpu_ms_per_host": round(cpu / n * 1000, 2),
        "lab_cpu_ms_per_host": round(lab_cpu / n * 1000, 2),
        "cpu_bound_s": round(cpu_bound, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "requests_per_host": sum(sum(r["requests"].values()) for r in per_host) / n,
        "kib_per_host": round(sum(r["bytes_in"] + r["bytes_out"] for r in per_host) / n / 1024, 1),
        "shells_left_open": records["__open_shells__"],
        "statuses": _counts(out.results),
        **apply_fig,
    }


def _counts(results: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return counts


def run_naive(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The naive peer on n hosts (one `Session.run_ps` per probe), via benchmarks/naive_vs_agent.py."""
    from benchmarks.naive_vs_agent import measure as naive_measure
    from benchmarks.naive_vs_agent import run_naive as naive_fn

    ns = argparse.Namespace(hosts=n, workers=args.forks, latency_ms=args.latency_ms,
                            ps_start_ms=args.ps_start_ms, probes="both")
    return naive_measure("naive run_ps", naive_fn, ns)


def main(argv: list[str] | None = None) -> int:
    """Parse options; serve the lab (child mode) or run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--forks", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--ps-start-ms", type=float, default=300.0)
    ap.add_argument("--transport", choices=("basic", "ntlm"), default="basic")
    ap.add_argument("--scale", help="comma-separated host counts: print how the cost grows")
    ap.add_argument("--apply", action="store_true", help="also plan and apply (installers take their fixture seconds)")
    ap.add_argument("--serial", default="10%", help="apply batches (with --apply)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="scale the lab installers' simulated seconds")
    ap.add_argument("--naive", action="store_true", help="also run the naive peer on --hosts hosts and print the speed-up")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-lab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--inventory-out", help=argparse.SUPPRESS)
    ap.add_argument("--records-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_lab is not None:
        return serve_lab(args)
    sizes = [int(x) for x in args.scale.split(",")] if args.scale else [args.hosts]
    rows = [measure(n, args) for n in sizes]
    naive = run_naive(args.hosts, args) if args.naive else None
    if args.json:
        print(json.dumps({"rows": rows, "naive": naive, "settings": vars(args)}, indent=2))
        return 0
    print(f"forks {args.forks}, latency {args.latency_ms:g} ms/request, powershell start {args.ps_start_ms:g} ms, "
          f"{args.transport} over HTTP, controller pid {os.getpid()} (lab in a child process)")
    head = ["hosts", "wall_s", "limit_s", "ratio", "agent_work_ms", "cpu_ms_per_host", "lab_cpu_ms_per_host",
            "cpu_bound_s", "peak_rss_mib",
            "requests_per_host", "kib_per_host", "shells_left_open"]
    header, *lines = table_lines(head, rows)
    print(header)
    for r, line in zip(rows, lines, strict=True):
        print(line)
        print(f"  statuses: {r['statuses']}")
        if "apply_wall_s" in r:
            print(f"  apply: {r['apply_wall_s']} s in batches (hosts, s) {r['apply_batches']}; {r['apply_statuses']}")
    if naive is not None:
        print(f"naive peer, {naive['hosts']} hosts: wall {naive['wall_s']} s, {naive['requests_per_host']} requests/host, "
              f"{naive['cpu_ms_per_host']} ms CPU/host (client+lab in one process)")
        kbfix_row = next((r for r in rows if r["hosts"] == args.hosts), rows[-1])
        print(f"speed-up of kbfix over the naive peer at {args.hosts} hosts: {naive['wall_s'] / kbfix_row['wall_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
