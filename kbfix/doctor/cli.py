"""`kbfix doctor`: the command and its table / JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kbfix.doctor.model import HostDoctor, StepStatus
from kbfix.exitcodes import ExitCode
from kbfix.terminal import cell, safe_markup
from kbfix.trace import TRACE_HELP

_STYLE = {StepStatus.OK: "green", StepStatus.WARN: "yellow", StepStatus.FAIL: "bold red", StepStatus.SKIP: "dim"}


def render_table(reports: list[HostDoctor], console: Console, *, all_steps: bool = False) -> None:
    """A summary row per host, then the steps of every host that cannot run a check (of every
    host with `all_steps`): step, result, what was seen, the fix. Skipped steps are left out of
    the detail unless `all_steps`."""
    summary = Table(title="kbfix doctor", show_lines=False, title_justify="left")
    for col in ("Host", "Can check", "Fix first", "Warnings"):
        summary.add_column(col, overflow="fold")
    for r in reports:
        warns = ", ".join(s.name for s in r.steps if s.status is StepStatus.WARN)
        summary.add_row(cell(r.host), "[green]yes[/]" if r.can_check else "[bold red]NO[/]",
                        r.failing.name if r.failing else "", warns)
    console.print(summary)
    for r in reports:
        if r.can_check and not all_steps:
            continue
        verdict = "can run a check" if r.can_check else f"CANNOT run a check: fix '{r.failing.name if r.failing else '?'}' first"
        table = Table(title=f"{safe_markup(r.host)}: {verdict}", show_lines=False, title_justify="left")
        for col in ("Step", "Result", "Detail", "Fix"):
            table.add_column(col, overflow="fold")
        for s in r.steps:
            if s.status is StepStatus.SKIP and not all_steps:
                continue
            # Details carry host answers (computer name, culture, user): never raw to the terminal.
            table.add_row(s.name, f"[{_STYLE[s.status]}]{s.status.value}[/]", cell(s.detail), cell(s.fix or ""))
        console.print(table)
    bad = [r.host for r in reports if not r.can_check]
    console.print(f"{len(reports) - len(bad)} of {len(reports)} host(s) can run a check"
                  + (f"; fix first: {safe_markup(', '.join(bad))}" if bad else "") + ("" if all_steps else " (-v: every step of every host)"))


def doctor(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="table (people) or json.")] = "table",
    trace: Annotated[Path | None, typer.Option("--trace", help=TRACE_HELP)] = None,
) -> None:
    """Read-only first contact: per host, each step and, when it fails, the fix to type.

    Steps: name resolution and TCP connect; TLS (chain against the CA file in use, name, expiry);
    the auth schemes the server offers vs the configured transport; authentication; WinRM quotas
    and envelope size (winrm/config, when the account may read it); PowerShell and .NET versions,
    OS language and code pages, 64-bit process, FIPS policy, elevated token (remote UAC); the
    agent's self-test (each read op once, timed); the WSUS admin API (WSUS servers) and the
    ConfigMgr Logs folder (site servers). Example: `kbfix -i site.yml --limit dmz doctor`.
    """
    if fmt not in ("table", "json"):
        typer.echo(f"kbfix: error: --format {fmt!r}: choose table or json", err=True)
        raise typer.Exit(int(ExitCode.USAGE))
    g = ctx.obj
    if g is None or not getattr(g, "inventory", None):
        typer.echo("kbfix: error: no inventory: pass -i FILE or set KBFIX_INVENTORY", err=True)
        raise typer.Exit(int(ExitCode.USAGE))
    from inventory import InventoryError, load_inventory

    try:
        hosts = list(load_inventory(g.inventory).select(g.limit))
    except InventoryError as exc:
        typer.echo(f"kbfix: error: {exc}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None
    from kbfix.doctor.run import doctor_hosts

    factory = None
    if trace is not None:
        from kbfix.trace import Tracer, tracing_factory

        factory = tracing_factory(Tracer(trace, "doctor"))
    reports = doctor_hosts(hosts, forks=g.forks, session_factory=factory)
    if fmt == "json":
        typer.echo(json.dumps({"kbfix_doctor": 1, "hosts": [r.to_json() for r in reports]}, indent=2, ensure_ascii=False))
    else:
        width = None if sys.stdout.isatty() else 200
        render_table(reports, Console(no_color=g.no_color, highlight=False, width=width),
                     all_steps=bool(getattr(g, "verbose", 0)))
    raise typer.Exit(int(ExitCode.OK if all(r.can_check for r in reports) else ExitCode.FAILED))
