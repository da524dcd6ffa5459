"""Log-scan benchmark: what a `log.scan` of a big log costs on the wire, by log size and by the
number of matches. The answer must grow with the matches (bounded, with their context), never
with the file.

    .venv/bin/python benchmarks/logscan.py                    # 20 and 200 MiB, 3 and 30 matches
    .venv/bin/python benchmarks/logscan.py --sizes 200 --matches 3

One lab host (Basic over HTTP, no injected latency) serves a generated WindowsUpdate.log-style
file (`winlab.generated_logs.GeneratedContent`) with the match lines at seeded positions; one
AgentSession runs one `log.scan` with 2 lines of context. Printed per case: bytes the client sent
and received (HTTP bodies, from the lab's records), the matches found, the agent's (the lab's
emulator's) seconds and the CPU ms of the process (client and lab: the lab scans in-process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import table_lines  # after the path insert: runnable as a script

LOG = r"C:\Program Files\Update Services\LogFiles\Big.log"
PATTERN = r"SyncUpdates System\.ArgumentException"


def match_lines(count: int) -> list[str]:
    """`count` distinct lines the pattern finds (non-ASCII text included, as on localized servers)."""
    words = ["nøgle", "Schlüssel", "键", "sleutel", "key"]
    return [f"2008-07-{10 + i % 20:02d} 09:14:{i % 60:02d}.250 UTC Error w3wp.12 ClientImplementation.SyncUpdates "
            f"System.ArgumentException: {words[i % len(words)]} {i}" for i in range(count)]


def measure(size_mb: int, matches: int) -> dict[str, Any]:
    """One scan of a `size_mb` MiB log holding `matches` match lines: wire bytes, matches, times."""
    from remoting.agent_protocol import op
    from remoting.session import AgentSession
    from tests.test_remoting_support import endpoint_for, make_hosts
    from winlab.generated_logs import GeneratedContent
    from winlab.hoststate import FileEntry
    from winlab.lab import Lab

    hosts = make_hosts()
    lines = match_lines(matches)
    hosts[0].state.put_file(FileEntry(path=LOG, content=GeneratedContent(size_mb, 7, lines)))
    with Lab(hosts) as lab:
        ep = endpoint_for(lab, "WSUS01")
        with AgentSession(ep) as s:
            cpu0, t0 = time.process_time(), time.perf_counter()
            resp = s.run([op("big", "log.scan", path=LOG, pattern=PATTERN, context=2, max_matches=1000)],
                         deadline_s=300)
            wall = time.perf_counter() - t0
        rec = lab.records("WSUS01")
    data = resp.results[0].data or {}
    found = sum(len(f["matches"]) for f in data.get("files", []))
    return {"log_mib": size_mb, "matches": matches, "found": found, "sent_kib": round(rec.bytes_in / 1024, 1),
            "received_kib": round(rec.bytes_out / 1024, 1), "scan_s": round(wall, 2),
            "process_cpu_ms": round((time.process_time() - cpu0) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run every (size, matches) case and print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20,200", help="log sizes in MiB, comma-separated")
    ap.add_argument("--matches", default="3,30", help="match counts, comma-separated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [measure(int(mb), int(m)) for mb in args.sizes.split(",") for m in args.matches.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("\n".join(table_lines(["log_mib", "matches", "found", "sent_kib", "received_kib", "scan_s", "process_cpu_ms"],
                                rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
