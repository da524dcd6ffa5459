"""Report rendering at fleet size: 1000 hosts × 10 findings (10,000 findings), every format.

Prints, per step, wall time in seconds (best of `--repeat` runs, after one warm-up so template
compilation and catalog loading are not counted) and output size in bytes, then checks the
budget from issue 8: rendering all formats < 3 s in total, HTML < 10 MB. Building and validating
the document are timed separately (they happen once per run, before any rendering).

    .venv/bin/python benchmarks/report_render.py [--hosts 1000] [--findings 10] [--lang de]

Exit status 1 when a budget is exceeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kbfix.report import TEXT_FORMATS, render, validate_document  # noqa: E402
from kbfix.report.document import assemble  # noqa: E402
from kbfix.report.sample import fleet, fleet_advisories, run_info  # noqa: E402

RENDER_BUDGET_SECONDS = 3.0
HTML_BUDGET_BYTES = 10 * 1024 * 1024


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(fastest wall time in seconds, last result) of `repeat` calls."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table and a JSON line; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=10, help="findings per host")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    results = fleet(args.hosts, args.findings)
    advisories = fleet_advisories(args.findings)
    t_build, doc = best_of(args.repeat, lambda: assemble(run_info(), results, advisories))
    t_validate, _ = best_of(1, lambda: validate_document(doc))
    figures: dict[str, Any] = {
        "hosts": len(doc["hosts"]),
        "findings": doc["summary"]["findings"],
        "lang": args.lang,
        "build_seconds": round(t_build, 3),
        "validate_seconds": round(t_validate, 3),
        "formats": {},
    }
    total = 0.0
    for fmt in TEXT_FORMATS:  # pdf (headless Chromium) is measured separately: see docs/reports.md
        render(doc, fmt, lang=args.lang)  # warm-up: template compile, catalog load
        seconds, data = best_of(args.repeat, lambda fmt=fmt: render(doc, fmt, lang=args.lang))
        total += seconds
        figures["formats"][fmt] = {"seconds": round(seconds, 3), "bytes": len(data)}
    figures["render_total_seconds"] = round(total, 3)
    html_bytes = figures["formats"]["html"]["bytes"]
    ok = total < RENDER_BUDGET_SECONDS and html_bytes < HTML_BUDGET_BYTES
    figures["ok"] = ok

    print(f"{figures['hosts']} hosts, {figures['findings']} findings, lang {args.lang}")
    print(f"  build document   {t_build:7.3f} s")
    print(f"  validate schema  {t_validate:7.3f} s")
    for fmt, v in figures["formats"].items():
        print(f"  render {fmt:<9} {v['seconds']:7.3f} s  {v['bytes'] / 1e6:7.2f} MB")
    print(f"  render total     {total:7.3f} s  (budget {RENDER_BUDGET_SECONDS} s); "
          f"HTML {html_bytes / 2**20:.2f} MiB (budget 10 MiB)")
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
