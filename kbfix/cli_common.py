"""What every kbfix command shares: the resolved global options (`Globals`), the mapping of
exceptions to exit codes (`guarded`), and opening the audit store."""

from __future__ import annotations

import sqlite3
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from kbfix.config import ConfigError, default_state_dir
from kbfix.exitcodes import ExitCode
from kbfix.planfile import PlanError
from kbfix.rollout import RolloutError
from kbfix.store import AuditStore, HostLockedError, StoreError
from kbfix.terminal import safe_text
from kbfix.window import WindowError


@dataclass
class Globals:
    """The global options, resolved."""

    inventory: list[Path]
    limit: str | None
    forks: int
    state: Path
    verbose: int
    quiet: bool
    no_color: bool
    host_timeout: float = 600.0
    vault_ids: list[str] = field(default_factory=list)
    vault_password_files: list[Path] = field(default_factory=list)
    ask_vault_pass: bool = False

    def console(self, *, stderr: bool = False) -> Console:
        """A console honouring --no-color (and plain when not a terminal)."""
        stream = sys.stderr if stderr else sys.stdout
        # Not a terminal (pipes, CI logs): rich would wrap at 80 columns; tables read better wider.
        width = None if stream.isatty() else 160
        return Console(stderr=stderr, no_color=self.no_color, highlight=False, width=width)


# Usage/config errors: exit 2 with one line. Imported lazily where the modules may be heavy.
_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, WindowError, RolloutError, PlanError, StoreError, HostLockedError, FileNotFoundError,
)

F = TypeVar("F", bound=Callable[..., Any])


def usage_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input or configuration (exit 2)."""
    extra: list[type[BaseException]] = []
    try:
        from inventory import InventoryError

        extra.append(InventoryError)
    except ImportError:  # inventory not importable: its loader will raise at use instead
        pass
    try:
        from playbooks import ManifestError, PlaybookError

        extra += [ManifestError, PlaybookError]
    except ImportError:
        pass
    return (*_USAGE_ERRORS, *extra)


def fail(message: str, code: ExitCode) -> typer.Exit:
    """Print `kbfix: error: MESSAGE` on stderr; the Exit to raise with `code`."""
    typer.echo(f"kbfix: error: {safe_text(message)}", err=True)
    return typer.Exit(int(code))


def guarded(fn: F) -> F:
    """Map exceptions to exit codes: usage/config errors → 2 with one line, anything
    unexpected → 1 (traceback with -v)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except usage_errors() as exc:
            raise fail(str(exc), ExitCode.USAGE) from None
        except sqlite3.DatabaseError as exc:
            # The store's file is damaged, read-only or on a full disk (the store names its file
            # for errors at open; later ones are mapped here): input, not a kbfix bug.
            raise fail(f"audit store: {exc}", ExitCode.USAGE) from None
        except Exception as exc:
            ctx = kwargs.get("ctx", args[0] if args else None)  # every command takes ctx first
            # click hands the command a click Context (not typer's subclass): duck-type it.
            g = ctx.find_object(Globals) if ctx is not None and hasattr(ctx, "find_object") else None
            if g is not None and g.verbose:
                traceback.print_exc()
            raise fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
                        ExitCode.INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def globals_of(ctx: typer.Context) -> Globals:
    """The resolved global options of this invocation (defaults when called without the callback)."""
    g = ctx.find_object(Globals)
    if g is None:  # invoked without the callback (tests calling a command directly)
        g = Globals([], None, 20, default_state_dir(), 0, False, False)
    return g


def open_store(g: Globals, *, readonly: bool = False) -> AuditStore:
    """The audit store in the --state directory (created on first use); reading commands
    (history, show, report) open it read-only, so a store on a read-only mount or owned by
    another user can be read (and is never changed by reading)."""
    return AuditStore.in_dir(g.state, readonly=readonly)


