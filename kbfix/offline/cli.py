"""The offline commands: `kbfix offline export` and `kbfix lab answer` (registered by
kbfix/cli_contact.py), and `check_engine`, the hook `kbfix check --answers DIR` uses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from kbfix.exitcodes import ExitCode
from kbfix.terminal import safe_text


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    typer.echo(f"kbfix: error: {message}", err=True)
    return typer.Exit(int(code))


def _selected_hosts(ctx: typer.Context) -> tuple[Any, list[Any]]:
    """(globals, hosts selected by -i/--limit). Raises typer.Exit(2) for usage errors."""
    g = ctx.obj
    if g is None or not getattr(g, "inventory", None):
        raise _fail("no inventory: pass -i FILE or set KBFIX_INVENTORY")
    from inventory import InventoryError, load_inventory

    try:
        inv = load_inventory(g.inventory, require_credentials=False)  # export contacts nothing
    except InventoryError as exc:
        raise _fail(str(exc)) from None
    return g, list(inv.select(g.limit))


def export(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the scripts (one per host).")],
) -> None:
    """Write one read-only PowerShell 2.0 collection script per host, for hosts WinRM cannot reach.

    Each script embeds the agent and that host's read-only request, bound to a fresh export
    nonce; it writes HOST.kbfix-answer.txt signed with a key only this controller's store
    (--state) can check. Run each on its server (console, RDP, scheduled task, software
    distribution), collect the answer files into one folder, then `kbfix check --answers DIR`.
    Example: `kbfix -i site.yml --limit dmz offline export -o offline/`.
    """
    from kbfix.offline.export import export_scripts
    from kbfix.offline.keystore import OfflineStoreError
    from kbfix.run.playbook_engine import PlaybookEngine

    g, hosts = _selected_hosts(ctx)
    try:
        result = export_scripts(hosts, PlaybookEngine(), g.state, output)
    except (ValueError, OfflineStoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    for name, path in result.scripts.items():
        typer.echo(f"{name}\t{path}")
    typer.echo(f"export {result.nonce[:12]}: {len(result.scripts)} script(s) in {output}; "
               f"answers are accepted for 7 days (kbfix check --answers DIR)", err=True)


def answer(
    scripts: Annotated[list[Path], typer.Argument(help="Exported *.kbfix-offline.ps1 scripts (or a folder of them).")],
    fixtures: Annotated[Path | None, typer.Option(
        "--fixtures", "-f", help="Fixture YAML file or folder (default: the demo site).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the answer files.")] = Path("answers"),
    on: Annotated[str | None, typer.Option("--on", help="Run every script on this fixture host instead of the one it names.")] = None,
    collected: Annotated[str | None, typer.Option(
        "--collected", help="The collection time the answer reports (ISO 8601 UTC; default now).")] = None,
) -> None:
    """Run exported offline scripts against emulated hosts and write their answer files (no PowerShell needed).

    Example: `kbfix offline export -o off/`, `kbfix lab answer off/ -o answers/`, `kbfix check --answers answers/`.
    """
    from winlab.fixtures import FixtureError, demo_site, load_fixtures
    from winlab.offline import ScriptError, answer_scripts

    files: list[Path] = []
    for s in scripts:
        files += sorted(s.glob("*.kbfix-offline.ps1")) if s.is_dir() else [s]
    if not files:
        raise _fail("no *.kbfix-offline.ps1 scripts given")
    when = None
    if collected is not None:
        try:
            when = datetime.fromisoformat(collected.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--collected {collected!r}: not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    try:
        hosts = load_fixtures(fixtures) if fixtures is not None else demo_site()
        written = answer_scripts(files, hosts, output, on=on, collected=when)
    except (FixtureError, ScriptError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise _fail(str(exc).strip("'\"")) from None
    for path in written:
        typer.echo(str(path))


def offline_inventory(g: Any) -> tuple[list[Any], str | None]:
    """(hosts selected by -i/--limit, inventory digest) for `check --answers`: no credentials
    are needed (nothing is contacted), so a missing password is not asked for. Raises
    InventoryError (exit 2) or typer.Exit(2) without an inventory."""
    if not getattr(g, "inventory", None):
        raise _fail("no inventory: pass -i FILE or set KBFIX_INVENTORY")
    from inventory import load_inventory

    inv = load_inventory(g.inventory, require_credentials=False)
    return list(inv.select(g.limit)), inv.digest


ANSWERS_HELP = ("Assess the offline answer files in this folder (from `kbfix offline export` scripts) instead of "
                "connecting; each is verified (format, export nonce, host, computer, age, signature) first.")


def check_engine(engine: Any, answers: Path | None, state: Path, hosts: list[Any],
                 max_age: timedelta | None = None) -> tuple[Any, list[Any]]:
    """The hook of `kbfix check --answers DIR`: (engine, hosts) unchanged without `answers`;
    else an `OfflineEngine` over the folder (same playbooks) and the hosts with endpoints for
    the answered ones. Raises FileNotFoundError for a missing folder (exit 2)."""
    if answers is None:
        return engine, hosts
    from kbfix.offline.answers import DEFAULT_MAX_AGE
    from kbfix.offline.replay import OfflineEngine, offline_hosts

    off = OfflineEngine(answers, state, max_age=max_age or DEFAULT_MAX_AGE)
    off.playbooks, off.packages = engine.playbooks, engine.packages
    selected = {h.name for h in hosts}
    for name in sorted(set(off.files) - selected):
        typer.echo(safe_text(f"kbfix: warning: {off.files[name].name}: host {name} is not selected (-i/--limit); "
                             "its answer is not assessed"), err=True)
    for h in hosts:
        value = (getattr(h, "vars", None) or {}).get("computer_name")
        if value:
            off.expect_computer(h.name, str(value))
    return off, offline_hosts(hosts, set(off.files))
