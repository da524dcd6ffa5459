"""The evidence side of the command line (issue 15): who and why of a run, waivers, reports with
their hash recorded, `kbfix audit verify [FILE]` and `kbfix status`.

kbfix/cli.py registers these and passes the shared options through; this module does not import
kbfix.cli (the global options come from `ctx.obj`).

Exit codes of `kbfix audit verify`: 0 the chain holds (and FILE is a report kbfix wrote);
4 the chain is broken (the first broken row is named) or FILE is not a report kbfix wrote;
2 usage errors (no store, unreadable file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from kbfix.config import default_state_dir
from kbfix.exitcodes import ExitCode
from kbfix.store import STORE_FILE, AuditStore, StoreError
from kbfix.store.engine import is_store_url, store_label
from kbfix.waivers import WaiverError, WaiverFile, load_waivers

TicketOpt = Annotated[str | None, typer.Option(
    "--change-ticket", metavar="TICKET", help="The change ticket this run belongs to (recorded in the store and every report).")]
ApproverOpt = Annotated[str | None, typer.Option(
    "--approved-by", metavar="NAME", help="Who approved the change (recorded in the store and every report).")]
OperatorOpt = Annotated[str | None, typer.Option(
    "--operator", metavar="NAME", help="Who runs kbfix (recorded); default user@machine.")]
WaiversOpt = Annotated[Path | None, typer.Option(
    "--waivers", metavar="FILE", help="Waiver file (YAML: host, advisory, justification, approved_by, expires); waived findings "
                      "are reported as `waived`. See docs/reports.md.")]


def who(operator: str | None, change_ticket: str | None, approved_by: str | None) -> dict[str, str | None]:
    """RunOptions fields for the who-and-why options, blank values as None."""
    def clean(v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    return {"operator": clean(operator), "change_ticket": clean(change_ticket), "approved_by": clean(approved_by)}


def require_ticket(required: bool, change_ticket: str | None) -> None:
    """Exit 2 when the config requires a change ticket for apply and none was given."""
    if required and not (change_ticket or "").strip():
        typer.echo("kbfix: error: this kbfix config requires a change ticket for apply (require_change_ticket: true); "
                   "pass --change-ticket", err=True)
        raise typer.Exit(int(ExitCode.USAGE))


def read_waivers(path: Path | None) -> WaiverFile | None:
    """Load the waiver file before anything is contacted; a bad file exits 2 naming file:line: field."""
    if path is None:
        return None
    try:
        return load_waivers(path)
    except WaiverError as exc:
        typer.echo(f"kbfix: error: {exc}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None


def warn_waivers(waivers: WaiverFile | None) -> None:
    """Print each expired waiver's warning on stderr (after a document was built with them)."""
    for w in waivers.warnings if waivers else ():
        typer.echo(f"kbfix: warning: {w}", err=True)


def write_reports(
    state: Path | str, run_id: str, advisories: Mapping[str, Mapping[str, Any]], reports: Sequence[Path], lang: str,
    *, waivers: WaiverFile | None = None, quiet: bool = False,
) -> dict[str, Any] | None:
    """Build the stored run's document (last known states, stop banner, waivers) and write each
    report with its SHA-256 recorded in the store. Returns the document (None without reports)."""
    if not reports:
        return None
    from kbfix.report.record import document_for_run, write_recorded

    with AuditStore.in_dir(state) as store:
        info = store.run_info(run_id)
        doc = document_for_run(store, info, store.host_results(run_id), advisories, waivers=waivers)
        for path in reports:
            digest = write_recorded(store, doc, path, lang=lang)
            if not quiet:
                typer.echo(f"report written: {path} (sha256 {digest})", err=True)
    warn_waivers(waivers)
    return doc


def _state(ctx: typer.Context) -> Path | str:
    """The audit store's location: the --state directory, or its PostgreSQL URL."""
    return getattr(ctx.obj, "store", None) or default_state_dir()


def _label(state: Path | str) -> str:
    """The store as messages name it: its file, or its URL without the password."""
    return store_label(state) if isinstance(state, str) and is_store_url(state) else str(Path(state) / STORE_FILE)


def _open_existing(state: Path | str) -> AuditStore:
    """The store in `state`, read-only (verify and status never change it); exit 2 when absent."""
    if not (isinstance(state, str) and is_store_url(state)) and not (Path(state) / STORE_FILE).is_file():
        typer.echo(f"kbfix: error: no audit store in {state} (pass --state DIR)", err=True)
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        return AuditStore.in_dir(state, readonly=True)
    except StoreError as exc:
        typer.echo(f"kbfix: error: {exc}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None


audit_app = typer.Typer(help="Tamper evidence: check the audit store's hash chain and the reports kbfix wrote.",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="A report file: say whether kbfix wrote exactly these bytes, "
                                                     "and for which run.")] = None,
) -> None:
    """Recompute the audit store's hash chain (every row's hash covers the previous one) and name
    the first broken row; with FILE, also look its SHA-256 up among the reports kbfix wrote.

    Example: `kbfix --state /var/lib/kbfix audit verify`, `kbfix audit verify audit-2026-11.html`.
    Exit 0 intact (and FILE known), 4 broken chain or unknown FILE, 2 no store / unreadable FILE.
    """
    from kbfix.report.record import identify

    state = _state(ctx)
    with _open_existing(state) as store:
        try:
            chain = store.verify_chain()
        except StoreError as exc:
            typer.echo(f"kbfix: error: {exc}", err=True)
            raise typer.Exit(int(ExitCode.USAGE)) from None
        ident = None
        if file is not None:
            try:
                ident = identify(store, file)
            except OSError as exc:
                typer.echo(f"kbfix: error: {file}: {exc.strerror or exc}", err=True)
                raise typer.Exit(int(ExitCode.USAGE)) from None
    bad = False
    if chain.ok:
        typer.echo(f"audit store {_label(state)}: chain intact, {chain.entries} rows, head {chain.head}")
    else:
        bad = True
        typer.echo(f"audit store {_label(state)}: CHAIN BROKEN at {chain.broken} "
                   f"({chain.entries - 1} rows verified before it)")
    if file is not None and ident is not None:
        if ident.known:
            for m in ident.matches:
                typer.echo(f"{file}: written by kbfix for run {m['run_id']} ({m['format']}, {m['lang']}) at {m['at']} "
                           f"as {m['path']}; sha256 {ident.sha256}")
        else:
            bad = True
            typer.echo(f"{file}: NOT a report kbfix wrote in this store (sha256 {ident.sha256} unknown); "
                       "it was edited, or written elsewhere")
    raise typer.Exit(int(ExitCode.FAILED if bad else ExitCode.OK))


def status(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write json/csv here instead of stdout.")] = None,
) -> None:
    """Each host's latest known state across runs: status, the run and time it comes from, and its age.

    Example: `kbfix status`, `kbfix status --format json`. Exit 0 (the store is only read).
    """
    from kbfix.fleet import age_text, fleet_state, render_fleet

    with _open_existing(_state(ctx)) as store:
        states = fleet_state(store)
    if fmt == "table":
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="kbfix fleet state (latest known per host)")
        for col in ("Host", "Status", "Run", "Kind", "Recorded (UTC)", "Age", "Roles"):
            table.add_column(col, overflow="fold")
        for s in states:
            table.add_row(escape(s.host), s.status, s.run_id, s.run_kind, f"{s.at:%Y-%m-%d %H:%M:%S}",
                          age_text(s.age_seconds), escape(", ".join(s.roles)))
        Console(width=None if sys.stdout.isatty() else 160, highlight=False).print(table)
        return
    try:
        data = render_fleet(states, fmt)
    except ValueError as exc:
        typer.echo(f"kbfix: error: --format: {exc}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None
    if output is not None:
        from kbfix.report.render import write_bytes_atomic

        write_bytes_atomic(output, data)
        typer.echo(f"fleet state written: {output}", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def json_dumps(value: Any) -> str:
    """Indented JSON for the terminal."""
    return json.dumps(value, indent=2, ensure_ascii=False)


__all__ = [
    "ApproverOpt", "OperatorOpt", "TicketOpt", "WaiversOpt", "audit_app", "read_waivers", "require_ticket", "status",
    "warn_waivers", "who", "write_reports",
]
