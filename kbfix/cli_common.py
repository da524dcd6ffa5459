"""What every kbfix command shares: the global options (`Globals`, declared once here and taken
both before and after the command through `with_globals`), the mapping of exceptions to exit codes
(`guarded`), and opening the audit store."""

from __future__ import annotations

import inspect
import logging
import re
import sqlite3
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy.exc
import typer
from rich.console import Console

from kbfix.config import ConfigError, default_state_dir
from kbfix.exitcodes import ExitCode
from kbfix.planfile import PlanError
from kbfix.preflight import PreflightError
from kbfix.rollout import RolloutError
from kbfix.store import AuditStore, HostLockedError, StoreError
from kbfix.store.diskguard import reason
from kbfix.store.engine import is_store_url, pg_url, safe_url, store_label
from kbfix.terminal import SanitizingFilter, safe_text
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
    procs: int = 0  # --procs (issue 19); 0 = left to kbfix (kbfix/run/procs_auto.py)
    store_url: str | None = None  # --state postgresql://…: the shared audit store (state then = local dir)

    @property
    def store(self) -> Path | str:
        """Where the audit store is: the state directory, or the PostgreSQL URL given as --state."""
        return self.store_url or self.state

    @property
    def store_label(self) -> str:
        """The store's location as it may be shown (a URL without its password)."""
        return store_label(self.store)

    def console(self, *, stderr: bool = False) -> Console:
        """A console honouring --no-color (and plain when not a terminal)."""
        stream = sys.stderr if stderr else sys.stdout
        # Not a terminal (pipes, CI logs): rich would wrap at 80 columns; tables read better wider.
        width = None if stream.isatty() else 160
        return Console(stderr=stderr, no_color=self.no_color, highlight=False, width=width)


# Usage/config errors: exit 2 with one line. Imported lazily where the modules may be heavy.
_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, WindowError, RolloutError, PlanError, StoreError, HostLockedError, FileNotFoundError,
    PreflightError,
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
        except (sqlite3.DatabaseError, sqlalchemy.exc.DBAPIError) as exc:
            # The store's file is damaged, read-only or on a full disk, or its database server
            # refused (the store names itself for errors at open; later ones are mapped here):
            # input, not a kbfix bug. `reason` gives the driver's words, not SQLAlchemy's SQL echo.
            raise fail(f"audit store: {reason(exc)}", ExitCode.USAGE) from None
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


# The global options, declared once. The group callback (kbfix/cli.py `main`) takes them before the
# command, with the environment variables; `with_globals` adds the same options to every run
# command, without environment variables, so a value typed after the command wins over one typed
# before it, and either wins over KBFIX_INVENTORY / KBFIX_STATE (click resolves the callback's
# option from the command line before its envvar).
INVENTORY_HELP = "Inventory file (kbfix YAML, Ansible INI/YAML); repeat for several."
LIMIT_HELP = "Ansible-style host pattern, e.g. 'site_aarhus:&wsus' or 'wsus0[1:3]'."
FORKS_HELP = "Hosts worked on in parallel (default 20)."
STORE_URL_FORM = "postgresql://USER@HOST[:PORT]/DB"
#: `scheme:/…` (two or more letters, so a Windows drive `C:/…` stays a directory).
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
STATE_HELP = ("Where the audit store is: a directory (SQLite; default: the platform user data dir), e.g. "
              "--state ./audit, or a PostgreSQL database shared by several controllers, "
              f"{STORE_URL_FORM}, e.g. --state postgresql://kbfix@db01:5432/kbfix (the database must exist; "
              "password: PGPASSWORD or ~/.pgpass, not the URL).")
VERBOSE_HELP = "More detail (-vv: debug log)."
QUIET_HELP = "Only the summary: no progress display, no per-host lines."
NO_COLOR_HELP = "No colour in the output."
VAULT_ID_HELP = "Ansible Vault secret LABEL@SOURCE (a password file, an executable, or prompt); repeatable."
VAULT_FILE_HELP = ("Ansible Vault password file, or an executable that prints it; repeatable. "
                   "Env: ANSIBLE_VAULT_PASSWORD_FILE; ansible.cfg vault_password_file.")
ASK_VAULT_HELP = "Ask for the Ansible Vault password."
PROCS_HELP = ("Processes the forks are spread over for the read-only contact work of check and plan (default: "
              "one, and the machine's cores once that one is CPU-bound while a core is idle; at least 200 hosts "
              "per process; apply stays in one process).")
HOST_TIMEOUT_HELP = ("Seconds one host may take (default 600; apply adds twice the plan's estimate); past it the "
                     "host is reported unreachable and the others go on.")


def _global_parameters() -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY

    def param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
        return inspect.Parameter(name, kw, default=default, annotation=annotation)

    return [
        param("g_inventory", Annotated[list[Path] | None, typer.Option(
            "-i", "--inventory", metavar="FILE", help=INVENTORY_HELP)]),
        param("g_limit", Annotated[str | None, typer.Option("--limit", "-l", metavar="PATTERN", help=LIMIT_HELP)]),
        param("g_forks", Annotated[int | None, typer.Option("--forks", "-f", min=1, metavar="N", show_default=False, help=FORKS_HELP)]),
        param("g_state", Annotated[str | None, typer.Option("--state", metavar="DIR|URL", help=STATE_HELP)]),
        param("g_verbose", Annotated[int, typer.Option("-v", "--verbose", count=True, show_default=False, help=VERBOSE_HELP)], 0),
        param("g_quiet", Annotated[bool, typer.Option("-q", "--quiet", help=QUIET_HELP)], False),
        param("g_no_color", Annotated[bool, typer.Option("--no-color", help=NO_COLOR_HELP)], False),
        param("g_host_timeout", Annotated[float | None, typer.Option(
            "--host-timeout", min=1, metavar="SECONDS", show_default=False, help=HOST_TIMEOUT_HELP)]),
        param("g_vault_id", Annotated[list[str] | None, typer.Option(
            "--vault-id", metavar="LABEL@SOURCE", help=VAULT_ID_HELP)]),
        param("g_vault_password_file", Annotated[list[Path] | None, typer.Option(
            "--vault-password-file", "--vault-pass-file", metavar="FILE", help=VAULT_FILE_HELP)]),
        param("g_ask_vault_pass", Annotated[bool, typer.Option("--ask-vault-pass", "-J", help=ASK_VAULT_HELP)], False),
        param("g_procs", Annotated[int | None, typer.Option(
            "--procs", min=1, metavar="N", show_default=False, help=PROCS_HELP)]),
    ]


GLOBAL_PARAMETERS = _global_parameters()
_GLOBAL_NAMES = frozenset(p.name for p in GLOBAL_PARAMETERS)


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING (0), INFO (1) or DEBUG (2+), every handler behind the terminal
    sanitiser (log lines carry host and inventory text). Safe to call again with a new level."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SanitizingFilter) for f in handler.filters):
            handler.addFilter(SanitizingFilter())


def merge_globals(ctx: Any, given: dict[str, Any]) -> Globals:
    """Fold the global options typed after the command (`given`, keyed `g_<name>`) into the
    context's `Globals`: a value given there replaces the one from before the command (or the
    environment); -v counts add up; -q and --no-color switch on from either place."""
    g = globals_of(ctx)
    if given.get("g_inventory"):
        g.inventory = list(given["g_inventory"])
    if given.get("g_limit") is not None:
        g.limit = given["g_limit"]
    if given.get("g_forks") is not None:
        g.forks = given["g_forks"]
    if given.get("g_state") is not None:
        g.state, g.store_url = resolve_state(given["g_state"])
    if given.get("g_procs") is not None:
        g.procs = given["g_procs"]
    if given.get("g_host_timeout") is not None:
        g.host_timeout = given["g_host_timeout"]
    if given.get("g_vault_id"):
        g.vault_ids = [*g.vault_ids, *given["g_vault_id"]]
    if given.get("g_vault_password_file"):
        g.vault_password_files = [*g.vault_password_files, *given["g_vault_password_file"]]
    g.ask_vault_pass = g.ask_vault_pass or bool(given.get("g_ask_vault_pass"))
    g.quiet = g.quiet or bool(given.get("g_quiet"))
    g.no_color = g.no_color or bool(given.get("g_no_color"))
    if given.get("g_verbose"):
        g.verbose += int(given["g_verbose"])
        configure_logging(g.verbose)
    ctx.obj = g
    return g


def with_globals(fn: F) -> F:
    """Give a command the global options (-i, --limit, --forks, --state, --host-timeout, -v, -q,
    --no-color) as its own click options, so `kbfix check -i site.yml` works like
    `kbfix -i site.yml check`. The wrapped function keeps its signature; the options are merged
    into the context's `Globals` (`merge_globals`) before it runs. `fn` takes ctx first."""
    sig = inspect.signature(fn, eval_str=True)
    clash = _GLOBAL_NAMES & set(sig.parameters)
    if clash:
        raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} are reserved for the global options")

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in _GLOBAL_NAMES}
        ctx = kwargs.get("ctx", args[0] if args else None)
        merge_globals(ctx, given)
        return fn(*args, **kwargs)

    params = [*sig.parameters.values(), *GLOBAL_PARAMETERS]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


def resolve_state(text: str | Path | None) -> tuple[Path, str | None]:
    """--state / KBFIX_STATE → (local state directory, store URL or None).

    A directory holds the SQLite store and the files kbfix keeps beside it (offline export key and
    records, the disk-full reserve). A `postgresql://…` URL puts the audit store in that database;
    the local files then live in the platform user data dir (`kbfix.config.default_state_dir`)."""
    if text is None or str(text) == "":
        return default_state_dir(), None
    if isinstance(text, str) and is_store_url(text):
        _check_store_url(text)
        return default_state_dir(), text
    if isinstance(text, str) and _URL_LIKE.match(text):
        # Not a folder: a mistyped URL would otherwise become a local SQLite store named after it,
        # and the operator would believe the run went to the shared store.
        raise typer.BadParameter(f"{safe_url(text)} is neither a directory nor a "
                                 f"{STORE_URL_FORM} URL", param_hint="'--state' / KBFIX_STATE")
    return Path(text), None


def _check_store_url(url: str) -> None:
    """Refuse a PostgreSQL URL that names no database: libpq would then use the database named
    like the user (`postgres`, the server's maintenance database) and put the audit tables there.
    Raises typer.BadParameter (exit 2)."""
    hint = "'--state' / KBFIX_STATE"
    try:
        database = pg_url(url).database
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (expected {STORE_URL_FORM})", param_hint=hint) from None
    if not database:
        raise typer.BadParameter(f"{safe_url(url)} names no database (expected {STORE_URL_FORM}; "
                                 "create it first: createdb DB)", param_hint=hint)


def open_store(g: Globals, *, readonly: bool = False) -> AuditStore:
    """The audit store in the --state directory or database (created on first use); reading
    commands (history, show, report) open it read-only, so a store on a read-only mount or owned
    by another user can be read (and is never changed by reading)."""
    return AuditStore.in_dir(g.store, readonly=readonly)


