"""Benchmark: the first-contact commands on the demo site through the lab (issue 17).

    .venv/bin/python benchmarks/first_contact.py [--hosts 13] [--forks 20]

Prints wall seconds for `kbfix doctor` (every step, every host), an online `kbfix check`, an
offline export, the lab answering the exported scripts, and `kbfix check --answers`, plus the
script and answer file sizes. Hosts: the demo site, cloned to `--hosts` when more are asked for
(HTTPS, NTLM, as `kbfix demo`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typer.testing import CliRunner

from benchmarks.table import table_lines
from kbfix.cli import app
from winlab.fixtures import clone_site, demo_site
from winlab.lab import Lab
from winlab.offline import answer_scripts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=13, help="hosts (the 13-host demo site, cloned when more)")
    ap.add_argument("--forks", type=int, default=20)
    args = ap.parse_args()
    hosts = demo_site() if args.hosts == 13 else clone_site(demo_site(), args.hosts)
    rows: list[tuple[str, float, str]] = []
    runner = CliRunner()
    with tempfile.TemporaryDirectory(prefix="kbfix-bench-contact-") as tmp_name:
        tmp = Path(tmp_name)
        state = str(tmp / "state")

        def timed(label: str, argv: list[str], note: str = "") -> None:
            t0 = time.perf_counter()
            res = runner.invoke(app, argv)
            rows.append((label, time.perf_counter() - t0, note or f"exit {res.exit_code}"))

        with Lab(hosts, https=True, workdir=tmp / "lab") as lab:
            inv = str(lab.write_inventory(tmp / "inv.yaml"))
            base = ["-i", inv, "--state", state, "-q", "-f", str(args.forks)]
            timed("doctor", [*base, "doctor", "--format", "json"])
            timed("check (online)", [*base, "check", "--format", "json"])
        timed("offline export", [*base, "offline", "export", "-o", str(tmp / "off")])
        scripts = sorted((tmp / "off").glob("*.kbfix-offline.ps1"))
        t0 = time.perf_counter()
        answer_scripts(scripts, hosts if args.hosts == 13 else clone_site(demo_site(), args.hosts), tmp / "answers")
        rows.append(("lab answers", time.perf_counter() - t0, f"{len(scripts)} scripts"))
        timed("check --answers", [*base, "check", "--answers", str(tmp / "answers"), "--format", "json"])
        script_sizes = [p.stat().st_size for p in scripts]
        answer_sizes = [p.stat().st_size for p in (tmp / "answers").iterdir()]
    print(f"first contact on {len(hosts)} hosts (forks {args.forks})")
    table = [{"step": label, "seconds": f"{seconds:.2f}", "note": note} for label, seconds, note in rows]
    table += [{"step": "script bytes", "seconds": "", "note": f"{min(script_sizes)}-{max(script_sizes)}"},
              {"step": "answer bytes", "seconds": "", "note": f"{min(answer_sizes)}-{max(answer_sizes)}"}]
    print("\n".join(table_lines(["step", "seconds", "note"], table)))


if __name__ == "__main__":
    main()
