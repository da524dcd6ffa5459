"""Controller CPU per host outside remoting: `run_check` over N hosts whose agent answers are
replayed from memory (assess, history, store, rollout threads, link), to measure the playbooks
and store side of issue 19 without the WinRM contact path or a lab process.

    .venv/bin/python benchmarks/host_cpu.py                      # 1000 hosts, forks 100
    .venv/bin/python benchmarks/host_cpu.py --hosts 1000 --profile 40   # + cProfile, top 40 by tottime
    .venv/bin/python benchmarks/host_cpu.py --stages             # + history (prefetched, and one query per host) / assess / record_host alone, ms per host

The lab serves the demo site's hosts without faults once (no injected latency); each host's
answer to the gather request is kept, and the measured run opens a `ReplaySession` per host that
returns it (so statuses match the fleet benchmark's mix). Printed: CPU ms per host of the whole
run (process time, single process), wall seconds, and the statuses.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class ReplaySession:
    """A check-mode session that answers every request with one recorded AgentResponse."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, ops: Any) -> Any:
        """The recorded answer (the gather request is the same for every host)."""
        return self.response


def recorded_answers(workdir: Path) -> tuple[list[Any], dict[int, Any]]:
    """(inventory hosts of the demo site without faults, id(endpoint) → that host's recorded
    answer to the gather request) from a lab started and stopped here."""
    import playbooks as pb
    from inventory import load_inventory
    from remoting.session import AgentSession
    from winlab.faults import Faults
    from winlab.fixtures import demo_site
    from winlab.lab import Lab

    template = [h for h in demo_site() if h.faults == Faults()]
    books = pb.load_playbooks()
    with Lab(template) as lab:
        inv = load_inventory([lab.write_inventory(workdir / "inventory.yaml", transport="basic")])
        hosts = inv.select(None)
        answers: dict[int, Any] = {}
        for h in hosts:
            ops = pb.gather_ops(books, pb.HostContext(name=h.name))
            with AgentSession(h.endpoint, check_mode=True) as s:
                answers[id(h.endpoint)] = s.run(ops)
    return hosts, answers


def main(argv: list[str] | None = None) -> int:
    """Record the answers, run the check over --hosts replayed hosts, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--forks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="measured runs (the best is printed)")
    ap.add_argument("--profile", type=int, metavar="N", help="also cProfile one run; print the top N by own time")
    ap.add_argument("--stages", action="store_true", help="also time assess and record_host alone")
    args = ap.parse_args(argv)

    from kbfix.run import RunOptions, run_check
    from kbfix.run.playbook_engine import PlaybookEngine
    from kbfix.store import AuditStore

    with tempfile.TemporaryDirectory(prefix="kbfix-hostcpu-") as tmp_s:
        tmp = Path(tmp_s)
        templates, answers = recorded_answers(tmp)
        hosts = [dataclasses.replace(templates[i % len(templates)], name=f"{templates[i % len(templates)].name}-{i:05d}")
                 for i in range(args.hosts)]
        engine = PlaybookEngine(session_factory=lambda ep, check_mode: ReplaySession(answers[id(ep)]))
        opts = RunOptions(forks=args.forks, host_deadline_s=120)
        best: tuple[float, float, Counter[str]] | None = None
        with AuditStore.in_dir(tmp / "state") as store:
            run_check(hosts[:20], engine, store, opts)  # warm: compiled expressions and templates
            for _ in range(args.repeat):
                cpu0, t0 = time.process_time(), time.perf_counter()
                out = run_check(hosts, engine, store, opts)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                statuses = Counter(r.status.value for r in out.results)
                if best is None or cpu < best[0]:
                    best = (cpu, wall, statuses)
            assert best is not None
            print(f"{args.hosts} hosts, forks {args.forks}: CPU {best[0] / args.hosts * 1000:.2f} ms/host "
                  f"(best of {args.repeat}), wall {best[1]:.2f} s; statuses {dict(best[2])}")
            if args.stages:
                stages(engine, store, hosts, answers)
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                run_check(hosts, engine, store, opts)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    return 0


def stages(engine: Any, store: Any, hosts: list[Any], answers: dict[int, Any]) -> None:
    """CPU ms per host of assess alone and of record_host (final row with facts) alone, one thread."""
    import playbooks as pb
    from kbfix.store import new_run_id
    from kbfix.store.history import StoreHistory
    from playbooks.history import HostHistory

    history = StoreHistory(store)
    t = time.process_time()
    history.prefetch(h.name for h in hosts)  # as a run reads it (kbfix.store.history.use_store_history)
    for h in hosts:
        history(h.name)
    hist_ms = (time.process_time() - t) / len(hosts) * 1000
    t = time.process_time()
    for h in hosts:
        StoreHistory(store)(h.name)
    hist_one_ms = (time.process_time() - t) / len(hosts) * 1000
    t = time.process_time()
    results = []
    for h in hosts:
        ctx = engine.context(h, HostHistory())
        results.append(pb.assess(engine.playbooks, ctx, answers[id(h.endpoint)]))
    assess_ms = (time.process_time() - t) / len(hosts) * 1000
    from kbfix.report.sample import run_info

    info = run_info("check").model_copy(update={"id": new_run_id()})
    store.begin_run(info)
    t = time.process_time()
    for r in results:
        store.record_host(info.id, r, phase="final", facts=r.facts)
    store_ms = (time.process_time() - t) / len(hosts) * 1000
    t = time.process_time()
    for r in results:
        store.record_host(info.id, r, phase="final", facts=r.facts, defer=True)
    store.flush()
    deferred_ms = (time.process_time() - t) / len(hosts) * 1000
    print(f"stages, ms CPU per host: history {hist_ms:.2f} (one query per host: {hist_one_ms:.2f}), "
          f"assess {assess_ms:.2f}, record_host {store_ms:.2f}, record_host deferred (a check's final rows) {deferred_ms:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
