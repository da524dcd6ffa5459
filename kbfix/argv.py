"""Global options after the command: `kbfix check -i site.yml` means `kbfix -i site.yml check`.

Typer (click) takes the callback's options only before the sub-command; ops engineers type them
after it, as `ansible-playbook` allows. `hoist_globals` moves the global options found after a
run command (ping, check, plan, apply, history, show, report, demo, doctor, offline) to the front. The `lab` and
`inventory` groups have options of their own with the same letters, so their arguments are
left as typed.
"""

from __future__ import annotations

from collections.abc import Sequence

# The callback's options (kbfix/cli.py `main`): those that take a value, and flags.
GLOBAL_WITH_VALUE = frozenset({"-i", "--inventory", "-l", "--limit", "-f", "--forks", "--state", "--host-timeout",
                               "--vault-id", "--vault-password-file", "--vault-pass-file"})
GLOBAL_FLAGS = frozenset({"-q", "--quiet", "--no-color", "--verbose", "--ask-vault-pass", "-J"})
RUN_COMMANDS = frozenset({"ping", "check", "plan", "apply", "history", "show", "report", "demo", "doctor", "offline",
                          "status", "audit"})  # status, audit: evidence (issue 15)


def _is_verbose(token: str) -> bool:
    return len(token) > 1 and token[0] == "-" and set(token[1:]) == {"v"}  # -v, -vv, -vvv


def hoist_globals(argv: Sequence[str]) -> list[str]:
    """Return `argv` (without the program name) with global options that follow a run command
    moved before it, order kept. Everything after `--` stays where it is. A value-taking option
    at the very end (no value) is left in place for click to report."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    cmd_at = next((i for i, a in enumerate(args[:end]) if a in RUN_COMMANDS
                   and (i == 0 or args[i - 1] not in GLOBAL_WITH_VALUE)), None)
    if cmd_at is None:
        return args
    front, rest = args[:cmd_at], args[cmd_at:]
    moved: list[str] = []
    kept: list[str] = [rest[0]]
    i = 1
    while i < len(rest):
        tok = rest[i]
        if tok == "--":
            kept.extend(rest[i:])
            break
        name = tok.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE and "=" in tok:
            moved.append(tok)
        elif tok in GLOBAL_WITH_VALUE and i + 1 < len(rest) and rest[i + 1] != "--":
            moved.extend(rest[i : i + 2])
            i += 1
        elif tok in GLOBAL_FLAGS or _is_verbose(tok):
            moved.append(tok)
        else:
            kept.append(tok)
        i += 1
    return front + moved + kept


def run() -> None:
    """The `kbfix` console script: hoist global options, then run the typer app."""
    import sys

    from kbfix.cli import app

    app(args=hoist_globals(sys.argv[1:]), prog_name="kbfix")
