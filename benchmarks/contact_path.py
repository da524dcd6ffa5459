"""Micro-benchmark: controller CPU of the WinRM contact path alone (issue 19), per host.

    .venv/bin/python benchmarks/contact_path.py                        # basic, 300 sessions
    .venv/bin/python benchmarks/contact_path.py --transport ntlm --sessions 200
    .venv/bin/python benchmarks/contact_path.py --transport ntlm-https --repeat 3

One session per host, serially, as a check opens it: `AgentSession` (Create), one read-only run
of the playbooks' gather request (Command, Send, Receive until Done, decode), Delete. The lab
runs in a child process with no injected latency, so the controller's process CPU time
(`os.times`, user + system, every thread: the session's and, for Kerberos, the HTTP watchdog's) is the
contact path's alone: no assess, no store. Printed: CPU ms per session (best and median of
`--repeat` rounds), the system (kernel: sockets, TLS records are user) part, and HTTP requests
per session as the lab counted them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _serve(n: int, transport: str, inventory: str, conn: Any) -> None:
    """Child: serve `n` clones of a quiet demo host until the parent says stop; send the HTTP request count."""
    from winlab.faults import Faults
    from winlab.fixtures import clone_site, demo_site
    from winlab.lab import Lab

    template = [h for h in demo_site() if h.faults == Faults()]
    hosts = clone_site(template, n)
    with Lab(hosts, https=transport == "ntlm-https") as lab:
        lab.write_inventory(Path(inventory), transport="basic" if transport == "basic" else "ntlm")
        conn.send("ready")
        conn.recv()
        requests_total = sum(lab.records(h.name).total_requests for h in hosts)
        conn.send(requests_total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", choices=("basic", "ntlm", "ntlm-https"), default="basic")
    ap.add_argument("--sessions", type=int, default=300, help="sessions per round (one per lab host)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds")
    args = ap.parse_args()

    from inventory import load_inventory
    from kbfix.run.playbook_engine import PlaybookEngine
    from playbooks import gather_ops
    from remoting.session import AgentSession

    with tempfile.TemporaryDirectory(prefix="kbfix-bench-contact-path-") as tmp:
        inv = str(Path(tmp) / "inventory.yaml")
        parent, child = get_context("spawn").Pipe()
        proc = get_context("spawn").Process(target=_serve, args=(args.sessions, args.transport, inv, child), daemon=True)
        proc.start()
        if parent.recv() != "ready":
            raise RuntimeError("the lab did not start")
        try:
            targets = [h for h in load_inventory([Path(inv)]).select(None) if h.endpoint is not None]
            engine = PlaybookEngine()
            ops = tuple(gather_ops(engine.playbooks, engine.context(targets[0])))
            per_round: list[tuple[float, float]] = []  # (user + system, system) ms per session
            for _ in range(args.repeat):
                t0 = os.times()
                for h in targets:
                    with AgentSession(h.endpoint, check_mode=True) as s:  # type: ignore[arg-type]
                        s.run(ops)
                t1 = os.times()
                system = t1.system - t0.system
                per_round.append(((t1.user - t0.user + system) * 1000 / len(targets), system * 1000 / len(targets)))
        finally:
            parent.send("stop")
            total = parent.recv()
            proc.join(timeout=60)
    print(json.dumps({
        "transport": args.transport, "sessions": args.sessions, "rounds": args.repeat,
        "cpu_ms_per_session_best": round(min(total for total, _sys in per_round), 3),
        "cpu_ms_per_session_median": round(statistics.median(total for total, _sys in per_round), 3),
        "of_which_system_ms_median": round(statistics.median(sys_ for _total, sys_ in per_round), 3),
        "http_requests_per_session": round(total / (args.sessions * args.repeat), 2) if total else None,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
