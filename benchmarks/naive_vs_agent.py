"""Benchmark: the same probes done the naive way (one pywinrm `Session.run_ps` per probe) versus
kbfix's `AgentSession` (every probe in one agent request), against the lab with injected latency.

    .venv/bin/python benchmarks/naive_vs_agent.py [--hosts 100] [--workers 20]
        [--latency-ms 20] [--ps-start-ms 300]

The fleet is the demo site (`winlab.fixtures.demo_site()`) cloned to `--hosts` hosts. Each host
adds `latency_ms` to every HTTP response and `ps_start_ms` to every powershell.exe start (the
cost that dominates real WinRM). Both sides run with a thread pool of `--workers`. Printed:
requests per host (from the lab's records, authentication included), powershell starts per
host, wall seconds and the speed-up. The naive probe scripts come from `winlab.naive_probes`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import winrm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import table_lines
from remoting.agent_protocol import OpRequest, op
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.session import AgentSession
from winlab import naive_probes as naive
from winlab.faults import Faults
from winlab.fixtures import clone_site, demo_site
from winlab.host import EmulatedHost
from winlab.lab import Lab

SMS_SETUP_KEY = r"HKLM\SOFTWARE\Wow6432Node\Microsoft\SMS\Setup"
WSYNC_LOG = r"C:\Program Files (x86)\Microsoft Configuration Manager\Logs\wsyncmgr.log"
WSYNC_PATTERN = r"Unexpected DeploymentAction for update"
WU_LOG = r"C:\WINDOWS\WindowsUpdate.log"
WU_PATTERN = r"SyncUpdates failure"
TIMEOUTS = Timeouts(connect=10, operation=20, read=30, command=120)


def naive_probe_scripts(probes: str = "both") -> list[str]:
    """The probes as a hand-written script sends them, one run_ps each: `kb954960` (the five of
    `winlab.naive_probes.naive_scripts`) or `both` advisories (four more)."""
    scripts = naive.naive_scripts()  # KB954960: registry, DLL version, SoftwareDistribution.log, product, service
    if probes == "both":
        scripts += [
            naive.registry_value_script(SMS_SETUP_KEY, "Installation Directory"),  # KB954474
            naive.select_string_script(WSYNC_LOG, WSYNC_PATTERN),
            naive.products_script("*KB954474*"),
            naive.select_string_script(WU_LOG, WU_PATTERN),  # the client side of KB954960
        ]
    return scripts


def agent_probe_ops(probes: str = "both") -> list[OpRequest]:
    """The same probes as agent ops, sent in one request."""
    ops = [
        op("wsus", "registry.values", key=naive.WSUS_SETUP_KEY, name="VersionString", view="64"),
        op("dll", "file.info", path=naive.WSUS_DLL),
        op("sdlog", "log.scan", path=naive.WSUS_LOG, pattern=naive.WSUS_LOG_PATTERN),
        op("prod", "products.list", pattern="*KB954960*"),
        op("svc", "service.status", name="WsusService"),
    ]
    if probes == "both":
        ops += [
            op("sms", "registry.values", key=SMS_SETUP_KEY, name="Installation Directory", view="64"),
            op("wsync", "log.scan", path=WSYNC_LOG, pattern=WSYNC_PATTERN),
            op("prod2", "products.list", pattern="*KB954474*"),
            op("wulog", "log.scan", path=WU_LOG, pattern=WU_PATTERN),
        ]
    return ops


def make_fleet(n: int, latency_ms: float, ps_start_ms: float) -> list[EmulatedHost]:
    """`n` clones of the demo site with only the injected latency (the demo's fault hosts, e.g.
    refused or auth-rejecting, answer normally here) in real time (time_scale 1)."""
    hosts = clone_site(demo_site(), n)
    for h in hosts:
        h.faults = Faults(latency_ms=latency_ms, ps_start_ms=ps_start_ms)
        h.time_scale = 1.0
    return hosts


def _account(host: EmulatedHost) -> tuple[str, str]:
    return next(iter(host.accounts.items()))


def run_naive(lab: Lab, host: EmulatedHost, probes: str) -> int:
    """All probes for one host with `winrm.Session.run_ps` (a new shell and process per probe).
    Returns how many probes exited 0 (a missing file or key makes a naive probe fail)."""
    user, password = _account(host)
    session = winrm.Session(lab.endpoints[host.name].url, auth=(user, password), transport="basic")
    ok = 0
    for script in naive_probe_scripts(probes):
        ok += session.run_ps(script).status_code == 0
    return ok


def run_agent(lab: Lab, host: EmulatedHost, probes: str) -> int:
    """All probes for one host in one AgentSession request. Returns how many ops answered ok."""
    user, password = _account(host)
    le = lab.endpoints[host.name]
    ep = Endpoint(host=host.name, address=le.address, port=le.port, scheme="http", transport="basic",
                  username=user, password=Secret(password), allow_unencrypted=True, timeouts=TIMEOUTS)
    with AgentSession(ep) as s:
        return sum(r.ok for r in s.run(agent_probe_ops(probes)).results)


def _guarded(fn: Callable[[Lab, EmulatedHost, str], int], lab: Lab, host: EmulatedHost, probes: str) -> int:
    """`fn(lab, host, probes)`, or -1 when the host failed (the failure is printed, the run goes on)."""
    try:
        return fn(lab, host, probes)
    except Exception as exc:
        print(f"{host.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return -1


def measure(name: str, fn: Callable[[Lab, EmulatedHost, str], int], args: argparse.Namespace) -> dict[str, object]:
    """Run `fn` for every host of a fresh fleet: wall seconds, process CPU seconds (client and
    lab together: one process) and per-host lab counts."""
    hosts = make_fleet(args.hosts, args.latency_ms, args.ps_start_ms)
    with Lab(hosts) as lab:
        started, cpu_started = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            outcomes = list(pool.map(lambda h: _guarded(fn, lab, h, args.probes), hosts))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        requests = sum(lab.records(h.name).total_requests for h in hosts)
        procs = sum(lab.records(h.name).processes_started for h in hosts)
        bytes_io = sum(lab.records(h.name).bytes_in + lab.records(h.name).bytes_out for h in hosts)
        left_open = lab.open_shells()
    n = len(hosts)
    return {"way": name, "hosts": n, "wall_s": round(wall, 2), "cpu_ms_per_host": round(cpu / n * 1000, 1), "requests_per_host": round(requests / n, 2),
            "powershell_starts_per_host": round(procs / n, 2), "kib_per_host": round(bytes_io / n / 1024, 1),
            "probes_ok": sum(o for o in outcomes if o >= 0), "hosts_failed": sum(o < 0 for o in outcomes),
            "shells_left_open": left_open}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run both ways, print the table (or JSON) and return 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--ps-start-ms", type=float, default=300.0)
    ap.add_argument("--probes", choices=("both", "kb954960"), default="both",
                    help="probes of both advisories (9) or only the five KB954960 ones")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    rows = [measure("naive run_ps", run_naive, args), measure("kbfix agent", run_agent, args)]
    ratio = float(rows[0]["wall_s"]) / max(float(rows[1]["wall_s"]), 1e-9)
    if args.json:
        print(json.dumps({"rows": rows, "speedup": round(ratio, 2), "settings": vars(args)}, indent=2))
        return 0
    print(f"{args.hosts} hosts, {args.workers} workers, latency {args.latency_ms:g} ms/request, "
          f"powershell start {args.ps_start_ms:g} ms; {len(naive_probe_scripts(args.probes))} probes per host")
    head = ["way", "wall_s", "cpu_ms_per_host", "requests_per_host", "powershell_starts_per_host", "kib_per_host",
            "probes_ok", "hosts_failed", "shells_left_open"]
    print("\n".join(table_lines(head, rows)))
    print(f"speed-up: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
