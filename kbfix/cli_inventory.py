"""`kbfix inventory …`: list, graph and check an inventory."""

from __future__ import annotations

import typer

inventory_app = typer.Typer(help="Inspect an inventory: hosts, groups and effective settings.", no_args_is_help=True)
