"""First-contact commands (issue 17): `kbfix doctor`, `kbfix offline export`, and the lab's
`fixture-from-trace` and `answer`. `register(app, lab_app)` adds them to the CLI (one line in
kbfix/cli.py); `check --answers` and `--trace` hook into kbfix/cli.py's own commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbfix.exitcodes import ExitCode

offline_app = typer.Typer(help="Offline collection for hosts WinRM cannot reach: export scripts, run them "
                               "on the servers, then `kbfix check --answers DIR`.", no_args_is_help=True)


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    typer.echo(f"kbfix: error: {message}", err=True)
    return typer.Exit(int(code))


def fixture_from_trace(
    trace: Annotated[Path, typer.Argument(help="A trace folder (from --trace DIR) or one *.trace.json file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The fixture YAML to write.")],
    account: Annotated[str, typer.Option(
        "--account", help="USER=PASSWORD of the lab account the fixture gets (traces hold no password).")
    ] = "kbfix=kbfix-lab-Secret-1",
) -> None:
    """Turn agent traces into a winlab fixture whose check gives the same findings.

    Example: `kbfix -i site.yml check --limit wsus01 --trace tr/`, then
    `kbfix lab fixture-from-trace tr/ -o wsus01.yaml` and `kbfix lab up -f wsus01.yaml`.
    """
    from winlab.fixtures import FixtureError
    from winlab.from_trace import trace_files, write_fixture

    user, sep, password = account.partition("=")
    if not sep or not user or not password:
        raise _fail("--account: expected USER=PASSWORD")
    try:
        files = trace_files(trace)
        out = write_fixture(files, output, {user: password})
    except (ValueError, FixtureError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"fixture written: {out} ({len(files)} host(s))", err=True)


def register(app: typer.Typer, lab_app: typer.Typer) -> None:
    """Add the first-contact commands to the kbfix CLI."""
    lab_app.command("fixture-from-trace")(fixture_from_trace)
    from kbfix.cli_common import with_globals
    from kbfix.doctor.cli import doctor

    app.command(epilog="Exit codes: 0 every host can run a check; 4 some host cannot; 2 usage error.")(with_globals(doctor))
    from kbfix.offline.cli import answer, export

    offline_app.command("export")(with_globals(export))
    lab_app.command("answer")(answer)
    app.add_typer(offline_app, name="offline")
