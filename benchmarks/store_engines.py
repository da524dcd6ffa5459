"""The audit store on SQLite vs PostgreSQL (issue 18): rows written per second through the store's
API, as a check and an apply write them (one `record_host` per host with its findings and facts,
then an intent and a result per host), each a committed, chained transaction.

Usage: .venv/bin/python benchmarks/store_engines.py [--hosts 300] [--repeat 3]
       [--pg postgresql://postgres@127.0.0.1:5432/test]   (an admin URL: a scratch database is made there)

Prints per engine (best of --repeat by wall time): audit rows written (chained rows: host
results, findings, facts, intents, results), wall seconds, rows/s, and CPU milliseconds per host
for this process and, for PostgreSQL on this machine, its server backend (from /proc). SQLite
commits are FULL-synced to the file; PostgreSQL's are as the server is configured (fsync on).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from kbfix.report.sample import fleet, run_info  # noqa: E402
from kbfix.store import AuditStore  # noqa: E402
from playbooks.model import ExecutedAction, PlannedAction, utc_now  # noqa: E402


def _backend_cpu_s(store: AuditStore) -> float | None:
    """CPU seconds used so far by the PostgreSQL server process serving this store (local server only)."""
    if store.dialect != "postgresql":
        return None
    pid = store._db.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(location: str, n: int) -> tuple[int, float, float, float | None]:
    """(rows written, wall s, this process's CPU s, server backend CPU s or None) for n hosts."""
    action = PlannedAction(id="a1", advisory="KB954960", kind="install_package", description="install",
                           estimated_seconds=3.0, expected_exit_codes=[0, 3010])
    with AuditStore.in_dir(location) as store:
        info = run_info()
        store.begin_run(info)
        results = fleet(n, 2)
        entries0 = store.verify_chain().entries
        server0 = _backend_cpu_s(store)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for r in results:
            store.record_host(info.id, r, phase="assess", facts={"dll": "3.1.6001.65", "build": "6001"})
            store.record_intent(info.id, r.host, action)
            store.record_result(info.id, r.host, "a1", ExecutedAction(action_id="a1", outcome="success", exit_code=0,
                                                                         started=utc_now()))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        server1 = _backend_cpu_s(store)
        rows = store.verify_chain().entries - entries0
    server = None if server0 is None or server1 is None else server1 - server0
    return rows, wall, cpu, server


def main() -> int:
    """Run each engine and print one line per engine."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default=os.environ.get("KBFIX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()
    admin_url = sa.make_url(args.pg).set(drivername="postgresql")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    for engine in ("sqlite", "postgresql"):
        runs = []
        for _ in range(args.repeat):
            if engine == "sqlite":
                with tempfile.TemporaryDirectory() as d:
                    runs.append(one(d, args.hosts))
                continue
            name = f"kbfix_bench_{secrets.token_hex(4)}"
            with psycopg.connect(admin_url.render_as_string(False), autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                runs.append(one(admin_url.set(database=name).render_as_string(False), args.hosts))
            finally:
                with psycopg.connect(admin_url.render_as_string(False), autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        rows, wall, cpu, server = min(runs, key=lambda r: r[1])
        server_text = f", server {server / args.hosts * 1000:5.2f}" if server is not None else ""
        print(f"{engine:10}  {rows} rows in {wall:6.2f} s = {rows / wall:7.0f} rows/s;  CPU ms/host: "
              f"kbfix {cpu / args.hosts * 1000:5.2f}{server_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
