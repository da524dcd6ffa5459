"""The `kbfix` command line (typer): a thin layer over `kbfix.run` and the audit store.

Sub-command groups `lab` and `inventory` live in their own modules. Every command here reads
the global options (inventory, limit, forks, state dir, verbosity, colour), runs one of the
run functions (`kbfix.run`), prints (tables and plan summaries: `kbfix.cli_render`), writes reports and
exits with a code from `kbfix.exitcodes`. The store-reading commands live in `kbfix.cli_store`.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from kbfix import __version__, cli_contact, cli_demo, cli_store
from kbfix import cli_common as common
from kbfix import cli_render as render
from kbfix.cli_common import Globals, fail, globals_of, guarded, open_store, with_globals
from kbfix.cli_evidence import (  # evidence (issue 15): who/why, waivers, recorded reports, audit, status
    ApproverOpt,
    OperatorOpt,
    TicketOpt,
    WaiversOpt,
    audit_app,
    read_waivers,
    require_ticket,
    status,
    who,
)
from kbfix.cli_evidence import write_reports as _write_recorded_reports
from kbfix.cli_inventory import inventory_app
from kbfix.cli_lab import lab_app
from kbfix.config import load_config
from kbfix.exitcodes import HELP as EXIT_HELP
from kbfix.exitcodes import ExitCode
from kbfix.offline.cli import ANSWERS_HELP, check_engine, offline_inventory
from kbfix.planfile import PlanDocument
from kbfix.preflight import check_outputs, check_window, wait_for_window
from kbfix.progress import make_progress
from kbfix.reboot import check_host_reboot_vars
from kbfix.resume import ResumeSettings, resume_settings
from kbfix.rollout import parse_serial
from kbfix.run import (
    RunControl,
    RunOptions,
    RunOutcome,
    exit_code,
    finish_code,
    run_apply,
    run_check,
    run_ping,
    run_plan,
)
from kbfix.sites.cli import worker as sites_worker
from kbfix.terminal import safe_text
from kbfix.trace import TRACE_HELP, with_trace
from kbfix.window import parse_window
from playbooks.reboot import (  # reboot (issue 21)
    RebootOptionError,
    RebootOptions,
    RebootSettings,
    resolve_reboot_options,
)

app = typer.Typer(
    name="kbfix",
    help=(
        "Find and fix KB954960 (WSUS 3.0) and KB954474 (ConfigMgr 2007) across a fleet over WinRM.\n\n"
        "Typical change: `kbfix -i site.yml check`, `kbfix -i site.yml plan -o plan.json` (review it), then "
        "`kbfix -i site.yml apply --plan plan.json --window 2026-11-28T22:00+01:00/PT4H --serial 1,10%,100%`.\n\n"
        + EXIT_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: no `<bool>` type column, each env var named once
)
app.add_typer(lab_app, name="lab")
app.add_typer(inventory_app, name="inventory")
cli_contact.register(app, lab_app)  # doctor, offline, lab fixture-from-trace/answer (issue 17)
app.add_typer(audit_app, name="audit")  # evidence (issue 15)
app.command(name="worker")(sites_worker)  # sites (issue 18): per-site Celery worker, kbfix/sites/cli.py

log = logging.getLogger("kbfix")




@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    inventory: Annotated[list[Path] | None, typer.Option(
        "-i", "--inventory", envvar="KBFIX_INVENTORY", metavar="FILE", help=common.INVENTORY_HELP)] = None,
    limit: Annotated[str | None, typer.Option("--limit", "-l", metavar="PATTERN", help=common.LIMIT_HELP)] = None,
    forks: Annotated[int, typer.Option("--forks", "-f", min=1, metavar="N", show_default=False, help=common.FORKS_HELP)] = 20,
    state: Annotated[str | None, typer.Option("--state", envvar="KBFIX_STATE", metavar="DIR|URL",
                                              help=common.STATE_HELP)] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, show_default=False, help=common.VERBOSE_HELP)] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help=common.QUIET_HELP)] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help=common.NO_COLOR_HELP)] = False,
    host_timeout: Annotated[float, typer.Option("--host-timeout", min=1, metavar="SECONDS", show_default=False,
                                                help=common.HOST_TIMEOUT_HELP)] = 600.0,
    version: Annotated[bool, typer.Option("--version", help="Print the kbfix version and exit.")] = False,
    vault_id: Annotated[list[str] | None, typer.Option("--vault-id", metavar="LABEL@SOURCE", help=common.VAULT_ID_HELP)] = None,
    vault_password_file: Annotated[list[Path] | None, typer.Option(
        "--vault-password-file", "--vault-pass-file", metavar="FILE", help=common.VAULT_FILE_HELP)] = None,
    ask_vault_pass: Annotated[bool, typer.Option("--ask-vault-pass", "-J", help=common.ASK_VAULT_HELP)] = False,
    procs: Annotated[int | None, typer.Option("--procs", min=1, metavar="N", show_default=False,
                                              help=common.PROCS_HELP)] = None,
) -> None:
    """Global options, before the command (`kbfix -i site.yml --limit wsus check`) or after it
    (`kbfix check -i site.yml`: kbfix.cli_common.with_globals); after it wins."""
    if version:
        typer.echo(f"kbfix {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    common.configure_logging(verbose)
    state_dir, store_url = common.resolve_state(state)
    ctx.obj = Globals(list(inventory or []), limit, forks, state_dir, verbose, quiet, no_color,
                      host_timeout, list(vault_id or []), list(vault_password_file or []), ask_vault_pass,
                      procs or 0, store_url=store_url)


def _hosts(g: Globals, broker: str | None = None) -> tuple[list[Any], str | None]:
    """Load the inventory (-i, else ansible.cfg's; vault options applied) and apply --limit.
    Raises InventoryError (exit 2). With a broker the controller needs no credential (the site
    workers hold them): none is asked for."""
    from inventory.configured import InventoryRequest, load_configured

    request = InventoryRequest(g.inventory, g.vault_ids, g.vault_password_files, g.ask_vault_pass)
    inv = load_configured(request, require_credentials=not (broker or load_config().broker)).inventory
    for w in getattr(inv, "warnings", ()):
        log.warning("inventory: %s", w)
    return inv.select(g.limit), inv.digest


def _engine(packages: Path | None = None, playbook_dirs: Sequence[Path] = (), broker: str | None = None) -> Any:
    broker = broker or load_config().broker  # sites (issue 18): --broker / KBFIX_BROKER / config `broker`
    if broker:
        from kbfix.sites.dispatch import broker_engine

        return broker_engine(broker, packages_dir=packages, extra_dirs=playbook_dirs)
    from kbfix.run.playbook_engine import PlaybookEngine

    return PlaybookEngine(extra_dirs=playbook_dirs, packages_dir=packages)


def _spread(g: Globals, engine: Any, hosts: Sequence[Any]) -> Any:
    """cost (issue 19): `engine` with check-mode contact work over --procs processes
    (kbfix.run.procs.spread; children load the inventory themselves; no typed secret is passed)."""
    from kbfix.run.procs import InventorySpec, spread

    typed = g.ask_vault_pass or any(v == "prompt" or v.endswith("@prompt") for v in g.vault_ids)
    spec = InventorySpec(tuple(str(p) for p in g.inventory), tuple(g.vault_ids),
                         tuple(str(p) for p in g.vault_password_files))
    return spread(engine, len(hosts), procs=g.procs, forks=g.forks, spec=spec, interactive_secrets=typed)


def _options(g: Globals, digest: str | None, run: RunOptions | None = None, **recorded: Any) -> RunOptions:
    """RunOptions from the globals (+ `run` for apply's rollout settings) and the option values
    to record in the audit store: the globals, plus every non-None `recorded` value as given."""
    opts = run or RunOptions()
    opts.forks = g.forks
    opts.host_deadline_s = g.host_timeout
    opts.inventory_hash = digest
    opts.recorded = {
        "limit": g.limit,
        "forks": g.forks,
        "host_timeout": g.host_timeout,
        "inventory": [str(p) for p in g.inventory],
        **{k: v for k, v in recorded.items() if v is not None},
    }
    return opts


def _with_who(opts: RunOptions, operator: str | None, ticket: str | None, approver: str | None) -> RunOptions:
    """evidence (issue 15): the run's operator, change ticket and approver onto its options."""
    for key, value in who(operator, ticket, approver).items():
        setattr(opts, key, value)
    return opts


def _reboot_options(*layers: RebootSettings | None, hosts: Sequence[Any] = ()) -> RebootOptions:
    """reboot (issue 21): the apply's RebootOptions (first layer wins); a bad value, or a host's bad
    kbfix_post_reboot_delay, exits 2."""
    try:
        check_host_reboot_vars(hosts)
        return resolve_reboot_options(*layers)
    except RebootOptionError as exc:
        raise fail(str(exc), ExitCode.USAGE) from exc


def _write_reports(g: Globals, outcome: RunOutcome, engine: Any, reports: Sequence[Path], lang: str,
                   waivers: Any = None) -> None:
    # evidence (issue 15): rendered from the store (last known states, stop banner, waivers), SHA-256 recorded
    _write_recorded_reports(g.store, outcome.info.id, engine.advisories(), reports, lang, waivers=waivers,
                            quiet=g.quiet)


def _run_with_signals(fn: Callable[[RunControl], RunOutcome], progress: Any = None,
                      grace_s: float = RunOptions.grace_s) -> RunOutcome:
    """Run `fn` with Ctrl-C/SIGTERM requesting a stop; the display acknowledges the stop at once
    and, on a second Ctrl-C, says what it abandons (when it can: `stopping`/`abandon`)."""
    control = RunControl()
    stopping = getattr(progress, "stopping", None)
    abandon = getattr(progress, "abandon", None)
    control.listen(on_stop=(lambda reason: stopping(reason, grace_s)) if stopping else None, on_abandon=abandon)
    with control.signals():
        return fn(control)


FORMAT_HELP = "table (people) or json (the report document, schema kbfix/report/v1, on stdout)."
ReportOpt = Annotated[list[Path] | None, typer.Option(
    "--report", "-r", metavar="FILE", help="Also write a report; format from the extension (.json .html .md .csv .xml). Repeatable.")]
LangOpt = Annotated[str, typer.Option("--lang", metavar="LANG", help="Report language: en, da, de, nl, zh_CN.")]
TraceOpt = Annotated[Path | None, typer.Option("--trace", metavar="DIR", help=TRACE_HELP)]
# sites (issue 18): run each host's agent requests through its site's `kbfix worker` (kbfix/sites/).
BrokerOpt = Annotated[str | None, typer.Option(
    "--broker", envvar="KBFIX_BROKER", metavar="URL", help="Send each host's work to its site's worker via this broker "
    "(redis://… or amqp://…; needs KBFIX_SIGN_KEY/CERT/STORE). Env: KBFIX_BROKER; config: broker.")]


@app.command(epilog=EXIT_HELP)
@with_globals
@guarded
def ping(ctx: typer.Context) -> None:
    """Reach and authenticate each host; one line per host.

    Example: `kbfix -i site.yml ping` → `wsus01  ok  WSUS01 5.2.3790 da-DK`. Exit 0, or 4 if any host fails.
    """
    g = globals_of(ctx)
    hosts, _digest = _hosts(g)
    out = run_ping(hosts, _engine(), RunOptions(forks=g.forks, host_deadline_s=g.host_timeout))
    failed = 0
    for name, err, ident in out:
        if err is None:
            who = " ".join(str(ident.get(k, "")) for k in ("computer_name", "os_version", "culture")).strip()
            typer.echo(f"{safe_text(name)}\tok\t{safe_text(who)}")
        else:
            failed += 1
            typer.echo(f"{safe_text(name)}\tFAILED\t{safe_text(err)}")
    raise typer.Exit(int(ExitCode.FAILED if failed else ExitCode.OK))


@app.command(epilog=EXIT_HELP)
@with_globals
@guarded
def check(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help=FORMAT_HELP)] = "table",
    report: ReportOpt = None,
    lang: LangOpt = "en",
    trace: TraceOpt = None,
    answers: Annotated[Path | None, typer.Option("--answers", metavar="DIR", help=ANSWERS_HELP)] = None,
    operator: OperatorOpt = None,
    change_ticket: TicketOpt = None,
    approved_by: ApproverOpt = None,
    waivers: WaiversOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Read-only: gather, assess and store every host; print a per-host table.

    Example: `kbfix -i site.yml check --report check.html`; machines: `kbfix -i site.yml check --format json`.
    Exit 0 when all are compliant/remediated/mitigated/not applicable, 3 when some are not, 4 when some fail.
    """
    g = globals_of(ctx)
    if fmt not in ("table", "json"):
        raise fail(f"--format {fmt!r}: choose table or json", ExitCode.USAGE)
    check_outputs(report or [], lang)  # before any host is contacted
    wv = read_waivers(waivers)
    hosts, digest = _hosts(g, broker) if answers is None else offline_inventory(g)
    engine, hosts = check_engine(with_trace(_engine(broker=broker), trace, "check"), answers, g.state, hosts)
    opts = _with_who(_options(g, digest, collection="offline" if answers else None,
                              answers=str(answers) if answers else None,
                              waivers=str(waivers) if waivers else None,
                              waivers_sha256=wv.sha256 if wv else None), operator, change_ticket, approved_by)
    progress = make_progress(quiet=g.quiet or fmt == "json", no_color=g.no_color)
    with open_store(g) as store, _spread(g, engine, hosts) as contact:
        outcome = _run_with_signals(lambda c: run_check(
            hosts, contact, store, opts, control=c, progress=progress), progress)
        if fmt == "json":
            from kbfix.report.record import document_for_run

            doc = document_for_run(store, outcome.info, outcome.results, engine.advisories(), waivers=wv)
            typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    if fmt == "json":
        pass
    elif g.quiet:
        render.print_summary(g.console(), outcome.results, f"kbfix check {outcome.info.id}")
    else:
        render.print_table(g.console(), outcome.results, f"kbfix check {outcome.info.id}")
    _write_reports(g, outcome, engine, report or [], lang, wv)
    raise typer.Exit(finish_code(outcome.results, lambda m: typer.echo(m, err=True)))  # says 'no host in scope'


@app.command(epilog=EXIT_HELP)
@with_globals
@guarded
def plan(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE", help="Where to write the plan (JSON).")] = Path("plan.json"),
    packages: Annotated[Path | None, typer.Option("--packages", metavar="DIR", help="Folder of update packages with their manifest.")] = None,
    reboot: Annotated[str | None, typer.Option(
        "--reboot", metavar="POLICY", help="Record the restart policy in the plan for apply: never, if-needed, always.")] = None,
    reboot_timeout: Annotated[float | None, typer.Option(
        "--reboot-timeout", metavar="SECONDS", help="Record the restart timeout (seconds) in the plan.")] = None,
    report: ReportOpt = None,
    lang: LangOpt = "en",
    trace: TraceOpt = None,
    operator: OperatorOpt = None,
    change_ticket: TicketOpt = None,
    approved_by: ApproverOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Dry run: assess and write the exact remote actions per host, with the facts they rest on.

    Runs zero mutating operations (sessions are opened in check mode; remoting refuses any).
    Example: `kbfix -i site.yml plan --packages ./pkgs -o plan.json`, review, then `kbfix apply --plan plan.json`.
    """
    g = globals_of(ctx)
    check_outputs(report or [], lang, [("-o/--output", output)])  # before any host is contacted
    try:  # reboot (issue 21): the reviewed plan carries the restart settings apply will use
        plan_reboot = RebootSettings(policy=reboot, timeout=reboot_timeout)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail(f"--reboot: {exc.errors()[0]['msg']}", ExitCode.USAGE) from exc
    _reboot_options(plan_reboot)
    hosts, digest = _hosts(g, broker)
    engine = with_trace(_engine(packages, broker=broker), trace, "plan")
    progress = make_progress(quiet=g.quiet, no_color=g.no_color)
    with open_store(g) as store, _spread(g, engine, hosts) as contact:
        outcome = _run_with_signals(lambda c: run_plan(
            hosts, contact, store, _with_who(_options(g, digest, packages=str(packages) if packages else None,
                                                     output=str(output)), operator, change_ticket, approved_by),
            reboot=plan_reboot if reboot is not None or reboot_timeout is not None else None, control=c,
            progress=progress), progress)
    assert outcome.plan is not None
    outcome.plan.write(output)
    if g.quiet:
        render.print_summary(g.console(), outcome.results, f"kbfix plan {outcome.info.id}")
    else:
        render.print_plan(g.console(), outcome.plan)
        typer.echo(f"plan written: {output} (run {outcome.info.id})", err=True)
    _write_reports(g, outcome, engine, report or [], lang)
    raise typer.Exit(finish_code(outcome.results, lambda m: typer.echo(m, err=True)))  # says 'no host in scope'


@app.command(epilog=EXIT_HELP)
@with_globals
@guarded
def apply(
    ctx: typer.Context,
    plan_file: Annotated[Path | None, typer.Option("--plan", metavar="FILE", help="Apply exactly this reviewed plan (from `kbfix plan`).")] = None,
    window: Annotated[str | None, typer.Option(
        "--window", metavar="WINDOW", help="Change window: ISO 8601 START/END or START/PT4H with UTC offsets, or a named window from the config file.")] = None,
    serial: Annotated[str | None, typer.Option("--serial", metavar="BATCHES", help="Batches as Ansible's serial: 1,10%,100% (the last repeats).")] = None,
    max_fail_percent: Annotated[float | None, typer.Option(
        "--max-fail-percent", min=0, max=100, metavar="PERCENT", help="Stop before the next batch when more than this share of a batch failed; as Ansible, only failed, unreachable and unknown hosts count (a non-compliant host kbfix cannot fix does not).")] = None,
    max_per_site: Annotated[int | None, typer.Option("--max-per-site", min=1, metavar="N", help="Hosts worked on at once per site.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when not interactive).")] = False,
    resume: Annotated[str | None, typer.Option("--resume", metavar="RUN", help=(
        "Finish an interrupted apply run (id, prefix or 'latest') in the same rollout: its batches, "
        "--max-fail-percent, --max-per-site, --window and --packages are kept unless given again here."))] = None,
    packages: Annotated[Path | None, typer.Option("--packages", metavar="DIR", help="Folder of update packages with their manifest.")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, metavar="SECONDS", help="Seconds running hosts may finish after Ctrl-C/SIGTERM.")] = 120.0,
    wait: Annotated[bool, typer.Option(
        "--wait-for-window", help="When --window opens later, wait for it (with a countdown; Ctrl-C stops) "
                                  "instead of exiting 2.")] = False,
    reboot: Annotated[str | None, typer.Option(
        "--reboot", metavar="POLICY", help="Restart hosts inside the window: never (default), if-needed (installer exit 3010/1641 or "
                         "Windows reports a restart pending), always. Config and plan can set it.")] = None,
    reboot_timeout: Annotated[float | None, typer.Option(
        "--reboot-timeout", metavar="SECONDS", help="Seconds a restarted host has to answer again with a new boot time (default 600).")] = None,
    reboot_message: Annotated[str | None, typer.Option(
        "--reboot-message", metavar="TEXT", help="Message shown to logged-on users (shutdown.exe /c, at most 127 characters).")] = None,
    pre_reboot_delay: Annotated[int | None, typer.Option(
        "--pre-reboot-delay", metavar="SECONDS", help="Seconds Windows waits before restarting (shutdown.exe /t, 0-600, default 2).")] = None,
    post_reboot_delay: Annotated[int | None, typer.Option("--post-reboot-delay", metavar="SECONDS", help="Seconds to let a restarted host "
        "settle once it is back, before the readiness check and verify (0-3600, default 0; kbfix_post_reboot_delay per host).")] = None,
    report: ReportOpt = None,
    lang: LangOpt = "en",
    operator: OperatorOpt = None,
    change_ticket: TicketOpt = None,
    approved_by: ApproverOpt = None,
    waivers: WaiversOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Remediate: apply a plan inside a change window, in batches, then verify each host.

    With --plan each host is re-gathered first and skipped as `drift` if its facts changed. Without
    --plan kbfix plans, shows the plan and asks (use --yes in scripts). Hosts whose planned work would
    not end inside the window are `skipped: window`; a running install is never cut off. Ctrl-C stops
    starting new hosts; `kbfix apply --resume RUN` finishes an interrupted run without repeating any install.
    --reboot if-needed restarts a host that needs it when the window still leaves --pre-reboot-delay +
    --reboot-timeout seconds, waits for a new boot time and verifies; a host that does not come back is failed.
    Example: `kbfix -i site.yml apply --plan plan.json --window 2026-11-28T22:00:00+01:00/PT4H --serial 1,50%,100% --max-fail-percent 10`.
    """
    g = globals_of(ctx)
    if plan_file is not None and resume is not None:
        raise fail("--plan and --resume cannot be combined", ExitCode.USAGE)
    # Everything is validated before any host is contacted (exit 2, nothing sent).
    check_outputs(report or [], lang)
    resumed: ResumeSettings | None = None
    if resume is not None:  # the interrupted run's rollout, unless overridden here
        with open_store(g) as store:
            resumed = resume_settings(store, resume, {
                "serial": serial, "max_fail_percent": max_fail_percent, "max_per_site": max_per_site,
                "window": window, "packages": str(packages) if packages else None})
        v = resumed.values
        serial, max_fail_percent, max_per_site, window = v["serial"], v["max_fail_percent"], v["max_per_site"], v["window"]
        packages = Path(v["packages"]) if v["packages"] else None
    try:  # reboot (issue 21): command line first, then the plan, then the config file
        cli_reboot = RebootSettings(policy=reboot, timeout=reboot_timeout, message=reboot_message,  # type: ignore[arg-type]
                                    pre_reboot_delay=pre_reboot_delay, post_reboot_delay=post_reboot_delay)
    except ValidationError as exc:
        raise fail(f"--reboot: {exc.errors()[0]['msg']}", ExitCode.USAGE) from exc
    config = load_config()
    require_ticket(config.require_change_ticket, change_ticket)  # evidence (issue 15)
    wv = read_waivers(waivers)
    _reboot_options(cli_reboot, config.reboot)  # reboot (issue 21): refuse bad values before any contact
    win = parse_window(window, named=config.windows) if window else None
    wait_s = check_window(win, wait=wait) if win is not None else 0.0
    steps = parse_serial(serial) if serial else None
    hosts, digest = _hosts(g, broker)
    _reboot_options(hosts=hosts)  # reboot (issue 21): a bad kbfix_post_reboot_delay exits 2 before contact
    engine = _engine(packages, broker=broker)  # reads and checks the packages manifest
    the_plan = PlanDocument.read(plan_file) if plan_file is not None else None
    if wait_s > 0 and win is not None:
        try:
            wait_for_window(win, lambda line: typer.echo(line, err=True))
        except KeyboardInterrupt:
            typer.echo("kbfix: interrupted while waiting for the change window; no host was contacted", err=True)
            raise typer.Exit(int(ExitCode.NON_COMPLIANT)) from None
    rollout = RunOptions(window=win, serial=steps, max_fail_percent=max_fail_percent, max_per_site=max_per_site,
                         grace_s=grace, batches=resumed.batches if resumed else None)
    recorded: dict[str, Any] = {
        **(resumed.recorded() if resumed else {}),
        "window": str(win) if win else None, "serial": serial, "max_fail_percent": max_fail_percent,
        "max_per_site": max_per_site, "grace_s": grace, "packages": str(packages) if packages else None,
        "plan": str(plan_file) if plan_file else None, "resume": resume, "yes": yes,
        "waivers": str(waivers) if waivers else None, "waivers_sha256": wv.sha256 if wv else None}
    opts = _options(g, digest, rollout, **recorded)
    _with_who(opts, operator, change_ticket, approved_by)
    with open_store(g) as store:
        progress = make_progress(quiet=g.quiet, no_color=g.no_color)
        if resumed is not None:
            if not g.quiet:
                typer.echo(resumed.describe(), err=True)
            run_id = resumed.run_id
            opts.reboot = _reboot_options(cli_reboot, None, config.reboot)
            opts.recorded["reboot"] = opts.reboot.recorded()
            outcome = _run_with_signals(lambda c: run_apply(hosts, engine, store, opts, resume=run_id, control=c,
                                                            progress=progress), progress, grace)
        else:
            if the_plan is not None:
                if the_plan.inventory_hash and digest and the_plan.inventory_hash != digest:
                    typer.echo("kbfix: warning: the inventory changed since the plan was made", err=True)
            else:
                if not yes and not sys.stdin.isatty():
                    raise fail("refusing to apply without a reviewed plan in non-interactive use: "
                                "pass --plan FILE or --yes", ExitCode.USAGE)
                planned = _run_with_signals(lambda c: run_plan(hosts, engine, store, opts, control=c,
                                                               progress=make_progress(quiet=True)))
                assert planned.plan is not None
                the_plan = planned.plan
                shown = g.console() if not (g.quiet and yes) else Console(file=io.StringIO())
                if render.print_plan(shown, the_plan) == 0:
                    typer.echo("nothing to apply", err=True)
                    raise typer.Exit(int(exit_code(planned.results)))
                if not yes and not typer.confirm("Apply this plan?", default=False):
                    raise fail("not confirmed; nothing was changed", ExitCode.USAGE)
            opts.reboot = _reboot_options(cli_reboot, the_plan.reboot, config.reboot)
            opts.recorded["reboot"] = opts.reboot.recorded()
            outcome = _run_with_signals(lambda c: run_apply(hosts, engine, store, opts, plan=the_plan, control=c,
                                                            progress=progress), progress, grace)
    title = f"kbfix apply {outcome.info.id} ({outcome.info.state})"
    if g.quiet:
        render.print_summary(g.console(), outcome.results, title)
    else:
        render.print_table(g.console(), outcome.results, title)
    _write_reports(g, outcome, engine, report or [], lang, wv)
    raise typer.Exit(finish_code(outcome.results, lambda m: typer.echo(m, err=True)))  # says 'no host in scope'


for _command in (cli_store.history, cli_store.show, cli_store.report):
    app.command(epilog=EXIT_HELP)(with_globals(_command))
app.command(epilog=cli_store.UNLOCK_EXIT_HELP)(with_globals(cli_store.unlock))
app.command("status", epilog=EXIT_HELP)(with_globals(guarded(status)))  # evidence (issue 15)
app.command(epilog=cli_demo.DEMO_EXIT_HELP)(with_globals(cli_demo.demo))

__all__ = ["Globals", "app", "main"]
