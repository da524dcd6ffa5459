"""`kbfix demo`: the whole job on the embedded lab, a newcomer's first command (kbfix/demo.py runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbfix.cli_common import globals_of, guarded
from kbfix.exitcodes import ExitCode
from kbfix.preflight import check_outputs
from playbooks.model import Status

DEMO_EXIT_HELP = "Exit codes: 0 every host ended as its fixture intends; 1 otherwise (mismatches listed)."
LangOpt = Annotated[str, typer.Option("--lang", metavar="LANG", help="Report language: en, da, de, nl, zh_CN.")]


@guarded
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for the reports, the plan and the audit store.")] = Path(
        "kbfix-demo"),
    lang: LangOpt = "en",
) -> None:
    """Run the whole job on the embedded lab: a newcomer's first command.

    Starts winlab in this process with the demo site: 13 emulated servers
    and clients (WSUS 3.0 RTM/SP1 with and without KB954960, ConfigMgr 2007
    with and without KB954474, Danish/German/Dutch/Chinese servers, one host
    that refuses connections, one that rejects the credentials). Then, over
    real WinRM (HTTPS with a generated CA, NTLM), it runs check, plan, apply
    (with verify) and a final check, and writes report.html/.json/.md/.csv,
    plan.json and the audit store into --out.

    Example: `kbfix demo`, then open ./kbfix-demo/report.html.
    """
    from kbfix.demo import run_demo

    g = globals_of(ctx)
    check_outputs((), lang)
    outcome = run_demo(out, lang=lang, forks=g.forks, echo=typer.echo)
    width = max(len(h) for h in outcome.statuses)
    typer.echo(f"\n{'host':<{width}}  {'first check':<15} after apply")
    for host, (first, final) in outcome.statuses.items():
        typer.echo(f"{host:<{width}}  {first:<15} {final}")
    typer.echo(f"\nplan:        {outcome.plan_path}")
    for fmt, path in outcome.reports.items():
        typer.echo(f"report:      {path}" + ("   <- open this one" if fmt == "html" else ""))
    typer.echo(f"audit store: {outcome.out_dir / 'state'}   ({outcome.seconds:.1f} s)")
    if outcome.ok:
        # A newcomer sees `failed` and `unreachable` next to exit 0: say that they are built so.
        failing = [f"{h} ({final})" for h, (_first, final) in outcome.statuses.items()
                   if Status(final).is_failure or Status(final).is_vulnerable]
        typer.echo("\nas intended: every host ended as its fixture was built to (winlab/fixtures/demo-expected.yaml)"
                   + (f"; {', '.join(failing)} fail on purpose, to show how kbfix reports them" if failing else ""))
    for problem in outcome.mismatches:
        typer.echo(f"kbfix demo: unexpected: {problem}", err=True)
    if outcome.recheck_mutations or outcome.shells_left_open:
        typer.echo(f"kbfix demo: re-check mutations {outcome.recheck_mutations}, shells left open "
                   f"{outcome.shells_left_open}", err=True)
    raise typer.Exit(0 if outcome.ok else int(ExitCode.INTERNAL))
