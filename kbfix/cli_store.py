"""The commands over the audit store: `history`, `show`, `report` (read-only), `unlock`
(registered in kbfix.cli)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from kbfix import cli_render as render
from kbfix.cli_common import fail, globals_of, guarded, open_store
from kbfix.cli_evidence import WaiversOpt, read_waivers, status
from kbfix.exitcodes import ExitCode
from kbfix.run import exit_code
from kbfix.store import StoreError, operator_name
from kbfix.terminal import safe_text

LangOpt = Annotated[str, typer.Option("--lang", metavar="LANG", help="Report language: en, da, de, nl, zh_CN.")]


@guarded
def history(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--count", min=1, metavar="N", help="How many runs (newest first).")] = 20,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table or json.")] = "table",
) -> None:
    """Past runs from the audit store, newest first.

    Example: `kbfix history -n 5`; then `kbfix show RUN` for one of them.
    """
    g = globals_of(ctx)
    with open_store(g, readonly=True) as store:
        runs = store.list_runs(count)
        rows = []
        for r in runs:
            counts = Counter(h.status for h in store.host_results(r.id))
            rows.append((r, counts))
        gone = frozenset(r.id for r in runs if r.state == "running" and not store.run_is_live(r.id))
    if fmt == "json":
        typer.echo(json.dumps([{**r.model_dump(mode="json"), "process_gone": r.id in gone,
                                "hosts": {s.value: n for s, n in c.items()}} for r, c in rows], indent=2))
        return
    g.console().print(render.history_table(rows, f"kbfix runs in {g.store_label}", gone))


@guarded
def show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id, a unique prefix, or 'latest'.")] = "latest",
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table or json.")] = "table",
) -> None:
    """One run from the audit store: options, events, per-host results and every executed action.

    Example: `kbfix show latest`, `kbfix show 20261128T210000Z --format json`. Exit code as the run's results.
    """
    g = globals_of(ctx)
    with open_store(g, readonly=True) as store:
        run_id = store.resolve_run(run)
        info = store.run_info(run_id)
        results = store.host_results(run_id)
        events = store.events(run_id)
        intents = store.intents(run_id)
        planned = store.planned(run_id)
        resumed_by = store.resumed_by(run_id)
        gone = info.state == "running" and not store.run_is_live(run_id)
    if fmt == "json":
        typer.echo(json.dumps({"run": info.model_dump(mode="json"), "process_gone": gone, "events": events,
                               "hosts": [r.model_dump(mode="json") for r in results], "actions": intents,
                               "planned": [{"host": h, "facts_digest": d, **a.model_dump(mode="json")}
                                           for h, a, d in planned],
                               "resumed_by": resumed_by}, indent=2, ensure_ascii=False))
        raise typer.Exit(int(exit_code(results)))
    render.print_run(g.console(), info, events, resumed_by, results, planned, intents, gone=gone)
    raise typer.Exit(int(exit_code(results)))


@guarded
def report(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id, a unique prefix, 'latest', or 'fleet' (each host's latest "
                                            "known state, as `kbfix status`).")] = "latest",
    fmt: Annotated[str | None, typer.Option(
        "--format", metavar="FORMAT", help="json, html, md, csv, junit, hdf (Heimdall) or pdf (default: from -o).")] = None,
    lang: LangOpt = "en",
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help="File to write (default: stdout).")] = None,
    waivers: WaiversOpt = None,
) -> None:
    """Render a stored run as a report (re-rendering the same run gives the same bytes); the
    SHA-256 of every file written is recorded in the audit store (`kbfix audit verify FILE`).

    Example: `kbfix report latest --lang da -o audit.html`; `kbfix report 20261128T2100 --format csv`;
    `kbfix report latest -o run.hdf.json` (Heimdall); `kbfix report fleet --format json`.
    """
    g = globals_of(ctx)
    if run == "fleet":  # evidence (issue 15)
        return status(ctx, fmt=fmt or ("csv" if output and output.suffix.lower() == ".csv" else "json"), output=output)
    from kbfix.report import format_for_path, render, write_report
    from kbfix.report.record import document_for_run, write_recorded

    wv = read_waivers(waivers)
    if output is not None and fmt is not None and fmt != format_for_path(output):
        raise fail(f"--format {fmt} does not match the extension of {output}", ExitCode.USAGE)
    # Read-only unless a file is written: its SHA-256 is then recorded (evidence, issue 15); a store
    # that cannot be written (read-only mount) still gives the report, with a warning.
    try:
        store = open_store(g, readonly=output is None)
    except StoreError:
        if output is None:
            raise
        store = open_store(g, readonly=True)
    with store:
        run_id = store.resolve_run(run)
        info = store.run_info(run_id)
        doc = document_for_run(store, info, store.host_results(run_id), _advisories(), waivers=wv)
        if output is not None and store.readonly:
            write_report(doc, output, lang=lang)
            typer.echo(f"kbfix: warning: {output} written, but its SHA-256 is not recorded: the audit store "
                       "is read-only", err=True)
        elif output is not None:
            digest = write_recorded(store, doc, output, lang=lang)
            typer.echo(f"report written: {output} (sha256 {digest})", err=True)
    for w in wv.warnings if wv else ():
        typer.echo(f"kbfix: warning: {safe_text(w)}", err=True)
    if output is None:
        sys.stdout.buffer.write(render(doc, fmt or "json", lang=lang))
        sys.stdout.flush()


UNLOCK_EXIT_HELP = "Exit codes: 0 the lock was released; 2 the host holds no lock of that run (nothing changed)."


@guarded
def unlock(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="The locked host (inventory name).")],
    run: Annotated[str, typer.Option("--run", metavar="RUN", help="The run that holds the lock (id, prefix or 'latest').")],
) -> None:
    """Release a host's apply lock left by a run that is gone (a crash on another machine or container).

    The release is written into that run's journal with your user name. A lock also ends by itself
    when its lease lapses (the holding process renews it while it runs).
    Example: `kbfix unlock wsus01 --run 20261128T210000Z-ab12cd34`.
    """
    g = globals_of(ctx)
    with open_store(g) as store:
        run_id = store.resolve_run(run)
        holder = store.force_unlock(host, run_id, operator_name())
    typer.echo(f"released the lock on {safe_text(host)} held by run {run_id} "
               f"(pid {holder.pid} on {safe_text(holder.machine)}); recorded in the run's journal")


def _advisories() -> dict[str, dict[str, Any]]:
    """Every built-in playbook's advisory metadata (reports of stored runs)."""
    import playbooks

    return playbooks.advisory_meta(playbooks.load_playbooks())


