"""`kbfix demo`: check → plan → apply → verify on the embedded lab, with reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEMO_HELP = """Run the whole job on the embedded lab: a newcomer's first command.

Starts winlab in this process with the demo site (13 emulated site servers and clients:
WSUS 3.0 RTM/SP1 with and without KB954960, ConfigMgr 2007 with and without KB954474,
Danish/German/Dutch/Chinese servers, a host that refuses connections and one that rejects the
credentials), then over real WinRM (HTTPS, NTLM) runs check, plan, apply and a final check,
and writes report.html/.json/.md/.csv, plan.json and the audit store into --out.

Exit 0 when every host ended as its fixture intends (winlab/fixtures/demo-expected.yaml),
1 otherwise.

Example:  kbfix demo --out ./kbfix-demo --lang da
"""


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reports, plan and audit store.")] = Path("kbfix-demo"),
    lang: Annotated[str, typer.Option("--lang", help="Report language: en, da, de, nl, zh_CN.")] = "en",
    forks: Annotated[int, typer.Option("--forks", min=1, help="Hosts worked on at once.")] = 20,
) -> None:
    """Run the whole job on the embedded lab (see DEMO_HELP)."""
    from kbfix.demo import run_demo  # the lab is only imported when the demo runs

    outcome = run_demo(out, lang=lang, forks=forks, echo=typer.echo)
    typer.echo("")
    width = max(len(h) for h in outcome.statuses)
    typer.echo(f"{'host':<{width}}  {'first check':<15} after apply")
    for host, (first, final) in outcome.statuses.items():
        typer.echo(f"{host:<{width}}  {first:<15} {final}")
    typer.echo("")
    typer.echo(f"plan:   {outcome.plan_path}")
    for fmt, path in outcome.reports.items():
        typer.echo(f"report: {path}" + ("   <- open this one" if fmt == "html" else ""))
    typer.echo(f"audit store: {outcome.out_dir / 'state'}   ({outcome.seconds:.1f} s)")
    if not outcome.ok:
        for line in outcome.mismatches:
            typer.echo(f"demo mismatch: {line}", err=True)
        if outcome.recheck_mutations:
            typer.echo(f"demo mismatch: the final check executed {outcome.recheck_mutations} mutating ops", err=True)
        if outcome.shells_left_open:
            typer.echo(f"demo mismatch: {outcome.shells_left_open} shells left open in the lab", err=True)
        raise typer.Exit(1)


demo.__doc__ = DEMO_HELP
