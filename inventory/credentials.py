"""Where a host's WinRM password comes from, wrapped in `Secret` the moment it is read.

Order, first found wins: an inventory value (`password`, `ansible_password`,
`ansible_winrm_password`/`ansible_winrm_pass`); the environment variable named by
`password_env`/`kbfix_password_env`; the OS keyring entry named by
`password_keyring`/`kbfix_password_keyring` (service; the user name is the account), read with
the `keyring` package; the `KBFIX_PASSWORD` environment variable; an interactive prompt (asked
once per user name). With no prompt and no terminal on stdin, loading stops with an
InventoryError that says which settings would supply the password. Kerberos may go without a
password (a ticket from kinit) and certificate auth needs none.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from inventory.errors import InventoryError
from remoting.endpoint import Secret

ENV_PASSWORD = "KBFIX_PASSWORD"  # noqa: S105 - the variable name, not a password
NEEDS_PASSWORD = frozenset({"ntlm", "basic", "credssp"})

Prompt = Callable[[str], str]


@dataclass
class CredentialContext:
    """Shared by every host of one load: environment, prompt and the answers already given."""

    env: Mapping[str, str]
    prompt: Prompt | None
    require: bool = True
    _asked: dict[str | None, Secret] = field(default_factory=dict)
    _keyring: dict[tuple[str, str | None], Secret | None] = field(default_factory=dict)


def default_prompt() -> Prompt | None:
    """`getpass` when stdin is a terminal, else None (no one can answer)."""
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        interactive = False
    return getpass.getpass if interactive else None


def _keyring_lookup(service: str, username: str | None, host: str) -> Secret | None:
    import keyring  # imported here: backend discovery is slow and most runs never need it
    from keyring.errors import KeyringError

    try:
        value = keyring.get_password(service, username or "")
    except KeyringError as exc:
        raise InventoryError(
            f"cannot read the OS keyring for host {host!r} (service {service!r}): {type(exc).__name__}",
            field="password_keyring",
        ) from None
    return Secret(value) if value is not None else None


def resolve_password(
    host: str,
    transport: str,
    username: str | None,
    inline: str | None,
    inline_source: str | None,
    password_env: str | None,
    password_keyring: str | None,
    ctx: CredentialContext,
) -> tuple[Secret | None, str | None]:
    """Return (password, where it came from) for one host; (None, None) when none is needed/found.

    Raises InventoryError when `ctx.require` and a password-based transport finds no password,
    when `password_env` names an unset variable, or when the keyring has no entry.
    """
    if inline is not None:
        return Secret(str(inline)), f"inventory {inline_source or 'password'}"
    if password_env:
        value = ctx.env.get(password_env)
        if value is None:
            if not ctx.require:
                return None, f"environment {password_env} (not set)"
            raise InventoryError(
                f"host {host!r}: environment variable {password_env} (from password_env) is not set",
                field="password_env",
            )
        return Secret(value), f"environment {password_env}"
    if password_keyring:
        key = (password_keyring, username)
        if key not in ctx._keyring:
            ctx._keyring[key] = _keyring_lookup(password_keyring, username, host)
        secret = ctx._keyring[key]
        if secret is None:
            if not ctx.require:
                return None, f"keyring {password_keyring} (no entry)"
            raise InventoryError(
                f"host {host!r}: the OS keyring has no password for service {password_keyring!r}, "
                f"user {username or ''!r}; add it with `keyring set {password_keyring} {username or ''}`",
                field="password_keyring",
            )
        return secret, f"keyring {password_keyring}"
    if ENV_PASSWORD in ctx.env:
        return Secret(ctx.env[ENV_PASSWORD]), f"environment {ENV_PASSWORD}"
    if transport not in NEEDS_PASSWORD or not ctx.require:
        return None, None
    if username in ctx._asked:
        return ctx._asked[username], "prompt"
    prompt = ctx.prompt if ctx.prompt is not None else default_prompt()
    if prompt is None:
        raise InventoryError(
            f"no password for host {host!r} (user {username or '?'}) and no terminal to ask on; set "
            f"password/ansible_password in the inventory, password_env or password_keyring, or the "
            f"{ENV_PASSWORD} environment variable",
            field="password",
        )
    try:
        answer = prompt(f"WinRM password for {username or '?'} (first needed by {host}): ")
    except (EOFError, KeyboardInterrupt):
        raise InventoryError(f"no password entered for host {host!r}", field="password") from None
    secret = Secret(answer)
    ctx._asked[username] = secret
    return secret, "prompt"
