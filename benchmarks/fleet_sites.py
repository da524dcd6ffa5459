"""Fleet benchmark across sites (issue 18): `kbfix check` over N lab hosts in 3 sites, embedded
and through a broker with 1 … K `kbfix worker` processes per site.

    .venv/bin/python benchmarks/fleet.py --workers 3 --hosts 3000     # embedded, then 1, 2, 3 per site
    .venv/bin/python benchmarks/fleet.py --workers 2 --hosts 300 --forks 60

The lab is fleet.py's (`LabProcess`: N clones of the demo site in a child process, `--latency-ms`
on every HTTP response, `--ps-start-ms` on every powershell.exe start); its inventory is given
three sites, SITE1..SITE3, round robin (a site is an inventory fact: the lab does not care). The
broker is a private `redis-server` (no persistence) on a free port, so its counters are this
run's alone. Each configuration runs in a fresh Python process (its own controller CPU).

Printed per configuration: wall seconds; controller CPU ms per host (`time.process_time` of the
controller process, Celery's threads included); worker CPU ms per host (all worker processes,
from /proc, idle time before the run subtracted); broker CPU ms per host (redis-server); lab CPU
ms per host; broker messages per host (tasks published + their results, from the dispatcher) and
Redis commands and KiB (in + out, Redis' `INFO stats`) per host; the statuses (must equal the
embedded run's). The controller keeps `--forks` hosts in flight; the workers of a site share
ceil(forks / 3) threads between them, so every configuration offers the same concurrency and only
the number of processes changes. Workers log at WARNING (INFO logs two lines per task).
Wall time on a shared machine includes other processes' load; CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import table_lines  # after the path insert: runnable as a script

SITES = ("SITE1", "SITE2", "SITE3")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc/<pid>/stat; 0.0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat(5))


def give_sites(inventory: Path) -> dict[str, str]:
    """Rewrite `inventory` (a lab inventory, YAML) so its hosts are spread over SITES round robin;
    returns host name → site."""
    import yaml

    doc = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    sites = {}
    for i, (name, entry) in enumerate(sorted(doc["hosts"].items())):
        entry["site"] = sites[name] = SITES[i % len(SITES)]
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return sites


def redis_counters(url: str) -> dict[str, int]:
    """Redis' commands processed and network bytes in/out so far."""
    import redis

    stats = redis.Redis.from_url(url).info("stats")
    return {k: int(stats[k]) for k in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")}


def measure(n: int, per_site: int, args: argparse.Namespace) -> dict[str, Any]:
    """One check of n lab hosts: embedded (per_site 0) or through a private Redis with `per_site`
    worker processes per site. Returns the figures."""
    from benchmarks.fleet import BASE, LabProcess
    from inventory import load_inventory
    from kbfix.run import RunOptions, run_check
    from kbfix.run.playbook_engine import PlaybookEngine
    from kbfix.store import AuditStore
    from tests import sitesrig
    from winlab.standin_packages import write_standin_packages

    with tempfile.TemporaryDirectory(prefix="kbfix-fleet-sites-") as tmp_s:
        tmp = Path(tmp_s)
        with LabProcess(n, args, tmp) as lab:
            give_sites(lab.inventory)
            hosts = [h for h in load_inventory([lab.inventory]).select(None) if h.name != BASE]
            packages = write_standin_packages(tmp / "packages")
            opts = RunOptions(forks=args.forks, host_deadline_s=600)
            if per_site == 0:
                engine: Any = PlaybookEngine(packages_dir=packages)
                with AuditStore.in_dir(tmp / "state") as store:
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    out = run_check(hosts, engine, store, opts)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                figures: dict[str, Any] = {"workers": "embedded", "worker_cpu_ms_per_host": "-",
                                           "broker_cpu_ms_per_host": "-", "messages_per_host": "-",
                                           "redis_cmds_per_host": "-", "broker_kib_per_host": "-"}
            else:
                figures = {"workers": f"{per_site}/site ({per_site * len(SITES)})"}
                out, wall, cpu = _brokered(hosts, per_site, args, tmp, lab.inventory, packages, opts, figures,
                                           sitesrig)
        lab_cpu = float(lab.records()["__lab_cpu_s__"])  # the lab's CPU while it served (idle otherwise)
    statuses: dict[str, int] = {}
    for r in out.results:
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
    return {"hosts": n, **figures, "wall_s": round(wall, 2), "controller_cpu_ms_per_host": round(cpu / n * 1000, 2),
            "lab_cpu_ms_per_host": round(lab_cpu / n * 1000, 2), "statuses": statuses}


def _brokered(hosts: Sequence[Any], per_site: int, args: argparse.Namespace, tmp: Path, inventory: Path,
              packages: Path, opts: Any, figures: dict[str, Any], sitesrig: Any) -> tuple[Any, ...]:
    """The brokered check (private Redis, `per_site` workers per site): (outcome, wall s, controller
    CPU s); the worker, broker and message figures go into `figures`."""
    from kbfix.run import run_check
    from kbfix.sites.app import make_app
    from kbfix.sites.dispatch import BrokerEngine, Dispatcher
    from kbfix.store import AuditStore

    n = len(hosts)
    ids = sitesrig.identities(tmp)
    ns = sitesrig.namespace()
    threads = max(1, math.ceil(math.ceil(args.forks / len(SITES)) / per_site))
    with sitesrig.PrivateRedis(tmp / "redis") as broker:
        dispatcher = Dispatcher(make_app(broker.url, ids.controller, namespace=ns), namespace=ns)
        workers = [sitesrig.start_worker(broker.url, site, inventory, ns, ids.worker, tmp, concurrency=threads,
                                         loglevel="WARNING")
                   for site in SITES for _ in range(per_site)]
        try:
            sitesrig.wait_for_sites(dispatcher, SITES, workers, timeout_s=180)
            engine = BrokerEngine(dispatcher, packages_dir=packages)
            with AuditStore.in_dir(tmp / "state") as store:
                assert broker.proc is not None
                w0 = sum(cpu_s(w.proc.pid) for w in workers)
                b0, r0 = cpu_s(broker.proc.pid), redis_counters(broker.url)
                cpu0, t0 = time.process_time(), time.perf_counter()
                out = run_check(hosts, engine, store, opts)
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                worker_cpu = sum(cpu_s(w.proc.pid) for w in workers) - w0
                broker_cpu, r1 = cpu_s(broker.proc.pid) - b0, redis_counters(broker.url)
        finally:
            sitesrig.stop_workers(workers)
    kib = (r1["total_net_input_bytes"] - r0["total_net_input_bytes"] + r1["total_net_output_bytes"]
           - r0["total_net_output_bytes"]) / 1024
    figures.update({
        "worker_threads": threads,
        "worker_cpu_ms_per_host": round(worker_cpu / n * 1000, 2),
        "broker_cpu_ms_per_host": round(broker_cpu / n * 1000, 2),
        "messages_per_host": round(2 * dispatcher.published / n, 2),  # each task and its result
        "redis_cmds_per_host": round((r1["total_commands_processed"] - r0["total_commands_processed"]) / n, 1),
        "broker_kib_per_host": round(kib / n, 1),
    })
    return out, wall, cpu


def run(args: argparse.Namespace) -> int:
    """`fleet.py --workers K`: the embedded run, then 1 … K workers per site; print the table."""
    rows = [_in_child(args.hosts, k, args) for k in range(0, args.workers + 1)]
    if args.json:
        print(json.dumps({"rows": rows, "settings": vars(args)}, indent=2))
        return 0
    print(f"{args.hosts} hosts in {len(SITES)} sites, forks {args.forks}, latency {args.latency_ms:g} ms/request, "
          f"powershell start {args.ps_start_ms:g} ms, {os.cpu_count()} cores, load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = ["workers", "wall_s", "controller_cpu_ms_per_host", "worker_cpu_ms_per_host", "broker_cpu_ms_per_host",
            "lab_cpu_ms_per_host", "messages_per_host", "redis_cmds_per_host", "broker_kib_per_host"]
    print("\n".join(table_lines(head, rows)))
    for r in rows:
        print(f"  {r['workers']}: {r['statuses']}" + (f", {r['worker_threads']} threads per worker"
                                                    if "worker_threads" in r else ""))
    same = all(r["statuses"] == rows[0]["statuses"] for r in rows)
    print("statuses identical in every configuration" if same else "STATUSES DIFFER between configurations")
    return 0 if same else 1


def _in_child(n: int, per_site: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure-one", str(n), "--per-site", str(per_site), "--forks", str(args.forks),
           "--latency-ms", str(args.latency_ms), "--ps-start-ms", str(args.ps_start_ms),
           "--transport", args.transport, "--time-scale", str(args.time_scale)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Child mode: measure one configuration and print its figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure-one", type=int, required=True)
    ap.add_argument("--per-site", type=int, default=0)
    ap.add_argument("--forks", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--ps-start-ms", type=float, default=300.0)
    ap.add_argument("--transport", default="basic")
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.measure_one, args.per_site, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
