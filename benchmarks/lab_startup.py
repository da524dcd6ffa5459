"""Benchmark: start the winlab WS-Management lab for N hosts; print start time, RSS and a round trip.

    .venv/bin/python benchmarks/lab_startup.py --hosts 1000 [--https] [--distinct-addresses] [--double]
                                               [--all --workers 20]

Hosts are the demo site cloned to N (`winlab.fixtures`) unless `--double` (or the emulated host is
not available yet), in which case a minimal in-file `LabHost` stand-in answers `hostname`.
Figures: seconds to build the hosts, seconds until every listener accepts, resident set size
(VmRSS, MiB) after start, and wall time of one Basic round trip (Create … Delete) with pywinrm to a
sample of the hosts without injected faults. Target (issue 3): 1000 hosts start in < 10 s and use < 1 GiB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from winlab.faults import Faults
from winlab.hostapi import LabHost, ProcessResult
from winlab.lab import Lab, LabEndpoint
from winlab.records import HostRecords

MINIMAL_FIXTURE = """
hosts:
  - name: WSUS01
    os: {version: 5.2.3790, arch: x64, culture: en-US}
    accounts: {'LAB\\kbfix': 'Secret-1'}
"""


@dataclass
class HostnameHost:
    """A minimal LabHost: every command prints the host name."""

    name: str
    accounts: Mapping[str, str] = field(default_factory=lambda: {"LAB\\kbfix": "Secret-1"})
    faults: Faults = field(default_factory=Faults)
    max_envelope_kb: int = 500
    max_shells_per_user: int = 30
    idle_timeout_s: float = 7200.0
    records: HostRecords = field(default_factory=HostRecords)

    def execute(self, command: str, args: list[str], stdin: bytes, env: Mapping[str, str], codepage: int,
                cancel: threading.Event) -> ProcessResult:
        self.records.process_started()
        return ProcessResult(self.name.encode() + b"\r\n", b"", 0)


def vm_rss_mib() -> float:
    """Current resident set size (MiB) from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_hosts(n: int, double: bool) -> tuple[list[LabHost], str]:
    if not double:
        try:
            from winlab import fixtures

            try:
                site, kind = fixtures.demo_site(), "EmulatedHost (demo site clones)"
            except (ValueError, OSError) as exc:  # the demo site is not shipped (yet): one inline host
                print(f"(demo site not loadable: {exc}; cloning a one-host inline fixture)")
                site, kind = fixtures.load_host_fixture_text(MINIMAL_FIXTURE, "inline"), "EmulatedHost (inline clones)"
            return list(fixtures.clone_site(site, n)), kind
        except ImportError as exc:
            print(f"(emulated host not available: {exc}; using the stand-in)")
    return [HostnameHost(f"HOST{i:05d}") for i in range(n)], "stand-in host"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--https", action="store_true")
    parser.add_argument("--distinct-addresses", action="store_true")
    parser.add_argument("--double", action="store_true", help="use the in-file stand-in host")
    parser.add_argument("--sample", type=int, default=20, help="hosts to do one round trip with")
    parser.add_argument("--all", action="store_true", help="one round trip with every host")
    parser.add_argument("--workers", type=int, default=1, help="client threads for the round trips")
    args = parser.parse_args()

    rss0 = vm_rss_mib()
    t0 = time.perf_counter()
    hosts, kind = build_hosts(args.hosts, args.double)
    t1 = time.perf_counter()
    with Lab(hosts, https=args.https, distinct_addresses=args.distinct_addresses) as lab:
        t2 = time.perf_counter()
        rss1 = vm_rss_mib()
        from winrm.protocol import Protocol

        by_name = {h.name: h for h in hosts}
        # Hosts with injected faults (refused, rejected, 500s, …) are left out of the round trips.
        healthy = [ep for ep in lab.endpoints.values() if by_name[ep.name].faults == Faults()]
        if args.all:
            sample = healthy
        else:
            step = max(1, len(healthy) // max(1, args.sample))
            sample = healthy[::step][: args.sample]

        def trip(ep: LabEndpoint) -> float:
            user, password = next(iter(by_name[ep.name].accounts.items()))
            extra = {"ca_trust_path": str(ep.ca_path)} if ep.ca_path else {}
            p = Protocol(ep.url, transport="ssl" if args.https else "basic", username=user, password=password,
                         read_timeout_sec=30, operation_timeout_sec=20, **extra)  # type: ignore[arg-type]
            s = time.perf_counter()
            shell_id = p.open_shell()
            cid = p.run_command(shell_id, "hostname")
            p.get_command_output(shell_id, cid)
            p.cleanup_command(shell_id, cid)
            p.close_shell(shell_id)
            return time.perf_counter() - s

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            trips = list(pool.map(trip, sample))
        rss2 = vm_rss_mib()
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    trips.sort()
    print(f"hosts: {args.hosts} ({kind}), scheme: {'https' if args.https else 'http'}, "
          f"distinct addresses: {args.distinct_addresses}")
    print(f"build hosts:        {t1 - t0:7.3f} s")
    print(f"start (listening):  {t2 - t1:7.3f} s")
    print(f"total to listening: {t2 - t0:7.3f} s   (target < 10 s)")
    print(f"RSS before/after start/after trips: {rss0:.0f} / {rss1:.0f} / {rss2:.0f} MiB   (target < 1024 MiB)")
    print(f"peak RSS:           {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0:.0f} MiB")
    if trips:
        print(f"round trip (Create, Command, Receive, Signal, Delete; pywinrm) over {len(trips)} hosts: "
              f"median {trips[len(trips) // 2] * 1000:.1f} ms, max {trips[-1] * 1000:.1f} ms "
              f"({t3 - t2:.2f} s total, {args.workers} client threads)")
    print(f"stop:               {t4 - t3:7.3f} s")


if __name__ == "__main__":
    main()
