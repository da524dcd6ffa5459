"""`kbfix inventory …`: list, graph and check an inventory.

Thin commands over `inventory` (loading, selection) and `inventory.render` (presentation).
None of them needs a password: they load with `require_credentials=False`, so a missing
password shows as "none" instead of prompting. Bad input exits 2 with one line naming file,
line and field.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inventory import Inventory, InventoryError
from inventory.configured import InventoryRequest, LoadedInventory, load_configured
from inventory.render import check_lines, graph, inventory_document
from kbfix.terminal import cell, safe_text

inventory_app = typer.Typer(
    help="Inspect an inventory: hosts, groups and effective settings.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

EXIT_USAGE = 2


class OutputFormat(str, Enum):
    """Output of `inventory list`."""

    table = "table"
    json = "json"


InventoryOpt = Annotated[
    list[Path] | None,
    typer.Option(
        # No envvar here: KBFIX_INVENTORY is read by the global -i (kbfix/cli.py), so both
        # `kbfix -i X inventory list` and `kbfix inventory list -i X` beat the variable.
        "-i", "--inventory", metavar="FILE",
        help="Inventory file or directory (kbfix YAML, Ansible INI/YAML); repeat to merge. Default: the global "
             "-i, or KBFIX_INVENTORY.",
    ),
]
VaultIdOpt = Annotated[
    list[str] | None,
    typer.Option("--vault-id", metavar="LABEL@SOURCE", help="Vault secret as LABEL@SOURCE (SOURCE: a password file, an executable, or prompt); repeatable."),
]
VaultFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--vault-password-file", "--vault-pass-file", metavar="FILE",
                 help="File holding the vault password, or an executable that prints it; repeatable."),
]
AskVaultOpt = Annotated[bool, typer.Option("--ask-vault-pass", "-J", help="Ask for the vault password.")]
LimitOpt = Annotated[
    str | None,
    typer.Option("--limit", "-l", metavar="PATTERN", help="Ansible host pattern: names, groups, globs, ~regex, !exclude, &intersect, @file."),
]


def request_from(ctx: typer.Context, inventory: list[Path] | None = None, vault_id: list[str] | None = None,
                 vault_password_file: list[Path] | None = None, ask_vault_pass: bool = False) -> InventoryRequest:
    """The inventory request: this command's options, else the global ones (`kbfix -i F inventory list`)."""
    g = ctx.obj

    def pick(own: list | None, name: str) -> list:  # type: ignore[type-arg]
        return list(own or []) or list(getattr(g, name, None) or [])

    return InventoryRequest(
        paths=pick(inventory, "inventory"),
        vault_ids=pick(vault_id, "vault_ids"),
        vault_password_files=pick(vault_password_file, "vault_password_files"),
        ask_vault_pass=ask_vault_pass or bool(getattr(g, "ask_vault_pass", False)),
    )


def _load_full(ctx: typer.Context, inventory: list[Path] | None, vault_id: list[str] | None = None,
               vault_password_file: list[Path] | None = None, ask_vault_pass: bool = False) -> LoadedInventory:
    try:
        return load_configured(request_from(ctx, inventory, vault_id, vault_password_file, ask_vault_pass),
                               require_credentials=False)
    except InventoryError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _load(ctx: typer.Context, inventory: list[Path] | None, vault_id: list[str] | None = None,
          vault_password_file: list[Path] | None = None, ask_vault_pass: bool = False) -> Inventory:
    return _load_full(ctx, inventory, vault_id, vault_password_file, ask_vault_pass).inventory


def _fail(message: str) -> None:
    typer.echo(f"kbfix: error: {safe_text(message)}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _limit(ctx: typer.Context, limit: str | None) -> str | None:
    if limit is None and ctx.obj is not None:
        return getattr(ctx.obj, "limit", None)
    return limit


@inventory_app.command("list")
def list_hosts(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    vault_id: VaultIdOpt = None,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
    limit: LimitOpt = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
) -> None:
    """List hosts with address, transport, site, roles and groups (skipped hosts with the reason).

    Examples:

        kbfix inventory list -i site.yml

        kbfix inventory list -i hosts.ini --limit 'wsus*:!wsus03' --format json
    """
    inv = _load(ctx, inventory, vault_id, vault_password_file, ask_vault_pass)
    try:
        hosts = inv.select(_limit(ctx, limit))
    except InventoryError as exc:
        _fail(str(exc))
        return
    if output is OutputFormat.json:
        typer.echo(json.dumps(inventory_document(inv, hosts), indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{len(hosts)} host(s) from {', '.join(str(p) for p in inv.sources[:3])}")
    for column in ("host", "url", "transport", "user", "site", "roles", "groups"):
        table.add_column(column)
    for h in hosts:
        ep = h.endpoint
        table.add_row(*(cell(v) for v in (  # inventory text: never markup, controls visible
            h.name,
            ep.url if ep else f"skipped: {h.skipped_reason}",
            ep.transport if ep else "",
            (ep.username or "") if ep else "",
            h.site or "",
            ", ".join(h.roles) or "(discover)",
            ", ".join(h.groups),
        )))
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: do not squeeze columns into 80 characters
        console = Console(highlight=False, width=240)
    console.print(table)


@inventory_app.command("graph")
def graph_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    vault_id: VaultIdOpt = None,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
    group: Annotated[str, typer.Argument(help="Group to start from.")] = "all",
) -> None:
    """Print the group tree, like `ansible-inventory --graph`.

    Examples:

        kbfix inventory graph -i hosts.ini

        kbfix inventory graph -i hosts.ini windows
    """
    inv = _load(ctx, inventory, vault_id, vault_password_file, ask_vault_pass)
    if group not in inv.groups:
        _fail(f"no group {group!r} in the inventory")
    typer.echo("\n".join(safe_text(line) for line in graph(inv, group)))


@inventory_app.command("check")
def check_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    vault_id: VaultIdOpt = None,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
    limit: LimitOpt = None,
) -> None:
    """Validate the inventory and show each host's effective settings (secrets as ***).

    Exit 0 when the inventory is valid, 2 with `file:line: field: message` when not.

    Examples:

        kbfix inventory check -i site.yml

        KBFIX_INVENTORY=hosts.ini kbfix inventory check --limit sccm
    """
    loaded = _load_full(ctx, inventory, vault_id, vault_password_file, ask_vault_pass)
    inv = loaded.inventory
    try:
        hosts = inv.select(_limit(ctx, limit))
    except InventoryError as exc:
        _fail(str(exc))
        return
    cfg = loaded.config.path
    typer.echo(f"ansible.cfg: {cfg if cfg is not None else '(none found)'}")
    if loaded.sources_from != "-i":
        typer.echo(f"inventory from: {loaded.sources_from}")
    if loaded.vault_identities:
        typer.echo(f"vault secrets: {', '.join(loaded.vault_identities)}")
    for w in inv.warnings:
        typer.echo(f"warning: {w}")
    for h in hosts:
        typer.echo("\n".join(safe_text(line) for line in check_lines(h)))
    winrm = sum(1 for h in hosts if h.endpoint is not None)
    typer.echo(
        f"inventory OK: {len(hosts)} host(s), {winrm} over WinRM, {len(hosts) - winrm} skipped; "
        f"sha256 {inv.digest}"
    )


@inventory_app.command("export")
def export_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    vault_id: VaultIdOpt = None,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Print the inventory as kbfix YAML (effective settings and vars per host; secrets left out).

    Examples:

        kbfix inventory export -i ansible/hosts.ini > site.yml
    """
    import yaml

    from inventory.export import to_kbfix_document

    inv = _load(ctx, inventory, vault_id, vault_password_file, ask_vault_pass)
    typer.echo(f"# kbfix inventory exported from {', '.join(str(p) for p in inv.sources)}; secrets left out")
    typer.echo(yaml.safe_dump(to_kbfix_document(inv), sort_keys=False, default_flow_style=None, allow_unicode=True), nl=False)
