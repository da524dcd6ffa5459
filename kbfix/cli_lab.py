"""`kbfix lab …`: run the embedded WS-Management lab (winlab)."""

from __future__ import annotations

import typer

lab_app = typer.Typer(help="Run the embedded WS-Management lab that emulates Windows site servers.", no_args_is_help=True)
