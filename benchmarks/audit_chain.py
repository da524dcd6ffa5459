"""What the audit store's hash chain costs: N `record_host` writes with and without chaining, and
one `verify_chain` over the result.

Usage: .venv/bin/python benchmarks/audit_chain.py [--hosts 500] [--repeat 3]
Prints seconds per configuration (best of --repeat). Each write is a FULL-synced SQLite commit,
which dominates; the chain adds one SELECT per chained table and one INSERT per new row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import kbfix.store.audit as audit  # noqa: E402
from kbfix.report.sample import fleet, run_info  # noqa: E402
from kbfix.store import AuditStore  # noqa: E402


def one(n: int, chained: bool) -> tuple[float, float, int]:
    """(seconds for n writes, seconds to verify, chain entries)."""
    original = audit.chain.append_pending
    if not chained:
        audit.chain.append_pending = lambda db: 0  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as d, AuditStore(Path(d) / "a.sqlite3") as store:
            info = run_info()
            store.begin_run(info)
            results = fleet(n, 2)
            start = time.perf_counter()
            for r in results:
                store.record_host(info.id, r)
            writes = time.perf_counter() - start
            start = time.perf_counter()
            report = store.verify_chain()
            return writes, time.perf_counter() - start, report.entries
    finally:
        audit.chain.append_pending = original


def main() -> int:
    """Run both configurations and print a small table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for chained in (False, True):
        best = min((one(args.hosts, chained) for _ in range(args.repeat)), key=lambda t: t[0])
        writes, verify, entries = best
        print(f"chained={chained!s:5}  {args.hosts} writes {writes:6.2f} s ({writes / args.hosts * 1000:5.2f} ms each)"
              f"  verify {verify:5.2f} s over {entries} chain entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
