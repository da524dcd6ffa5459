"""The `kbfix` command line (typer). Sub-command groups live in their own modules."""

from __future__ import annotations

import typer

from kbfix.cli_inventory import inventory_app
from kbfix.cli_lab import lab_app

app = typer.Typer(
    name="kbfix",
    help="Find and fix KB954960 (WSUS 3.0) and KB954474 (ConfigMgr 2007) across a fleet over WinRM.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(lab_app, name="lab")
app.add_typer(inventory_app, name="inventory")
