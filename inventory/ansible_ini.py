"""Ansible INI inventories, read the way Ansible's `ini` inventory plugin reads them.

Ansible's INI is not configparser INI (host lines are `name key=value ...`, sections are
`[group]`, `[group:vars]`, `[group:children]`), so this is a small line reader that follows
ansible-core `ansible/plugins/inventory/ini.py::InventoryModule._parse` rule for rule:
`#`/`;` comment lines; hosts before any section go to `ungrouped`; host lines are split with
`shlex` (comments allowed) and their values go through `ast.literal_eval`, falling back to the
plain string; `[g:vars]` lines split at the first `=` and are literal-evaluated too;
`[g:children]` may name a group declared later in the file, and a child group or a
`[g:vars]` section for a group that is never declared is an error.

kbfix adds one check Ansible does not make: the same host listed twice in one section is
reported as a duplicate (Ansible silently merges the lines).
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from inventory.data import InventoryData, Origin
from inventory.errors import InventoryError, did_you_mean
from inventory.ranges import RangeError, expand_host_pattern

_SECTION_RE = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_GROUPNAME_RE = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")
_COMMENT_MARKERS = ("#", ";")
_SHLEX_SPECIAL = re.compile(r"""['"\\#]|[^\S \t]""")  # quoting, escapes, comments, odd whitespace
# Values literal_eval can only refuse (a bare name, dotted or dashed) or that are plain ints:
# decided here without compiling an expression, which is most of the cost on large inventories.
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_PLAIN_INT = re.compile(r"^-?(?:0|[1-9][0-9]*)$")
_LITERAL_NAMES = {"True": True, "False": False, "None": None}


def parse_value(text: str) -> Any:
    """Ansible's INI `_parse_value`: a Python literal when `ast.literal_eval` accepts it, else the string.

    Tuples and sets become lists; complex numbers and `...` go back to strings, as Ansible does.
    """
    if _PLAIN_INT.match(text):
        return int(text)
    if _PLAIN_NAME.match(text):
        return _LITERAL_NAMES[text] if text in _LITERAL_NAMES else text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {(_coerce(k) if not isinstance(k, (list, dict)) else str(k)): _coerce(v) for k, v in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def parse_ini(text: str, path: Path, inv: InventoryData) -> None:
    """Read Ansible INI `text` (from `path`) into `inv`. Raises InventoryError with file and line."""
    pending: dict[str, dict[str, Any]] = {}
    group = "ungrouped"
    state = "hosts"
    seen_in_section: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in _COMMENT_MARKERS:
            continue
        origin = Origin(path, lineno)

        def fail(message: str, field: str | None = None, *, _line: int = lineno) -> InventoryError:
            return InventoryError(message, file=path, line=_line, field=field)

        m = _SECTION_RE.match(line)
        if m:
            group, state_or_none = m.groups()
            state = state_or_none or "hosts"
            seen_in_section = {}
            if state not in ("hosts", "children", "vars"):
                raise fail(
                    f"section [{group}:{state}] has unknown type {state!r}; use :vars or :children"
                    + ("" if state_or_none is None else _suggest(state))
                )
            if group not in inv.groups:
                if state == "vars" and group not in pending:
                    pending[group] = {"line": lineno, "state": "vars", "parents": []}
                inv.add_group(group, origin)
            if group in pending and state != "vars":
                if pending[group]["state"] == "children":
                    _add_pending_children(group, pending, inv, path)
                elif pending[group]["state"] == "vars":
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise fail(f"invalid section header {line!r}: no spaces or other invalid characters allowed in it")

        if state == "hosts":
            _host_line(line, group, origin, inv, seen_in_section)
        elif state == "vars":
            if "=" not in line:
                raise fail("expected key=value in a :vars section", f"{group}.vars")
            key, value = (part.strip() for part in line.split("=", 1))
            inv.set_group_var(group, key, parse_value(value), origin)
        else:  # children
            cm = _GROUPNAME_RE.match(line)
            if not cm:
                raise fail(f"expected a group name, got {line!r}", f"{group}.children")
            child = cm.group(1)
            if child not in inv.groups:
                decl = pending.setdefault(child, {"line": lineno, "state": "children", "parents": []})
                decl["parents"].append(group)
            else:
                inv.add_child(group, child, origin)

    for name, decl in pending.items():
        if decl["state"] == "vars":
            raise InventoryError(
                f"section [{name}:vars] is for group {name!r}, which is never declared", file=path,
                line=decl["line"], field=f"{name}.vars",
            )
        parent = decl["parents"][-1]
        raise InventoryError(
            f"section [{parent}:children] names group {name!r}, which is never declared"
            + _suggest(name, list(inv.groups)),
            file=path, line=decl["line"], field=f"{parent}.children",
        )


def _suggest(word: str, choices: list[str] | None = None) -> str:
    return did_you_mean(word, choices if choices is not None else ["vars", "children"])


def _add_pending_children(group: str, pending: dict[str, dict[str, Any]], inv: InventoryData, path: Path) -> None:
    for parent in pending[group]["parents"]:
        inv.add_child(parent, group, Origin(path, pending[group]["line"]))
        if parent in pending and pending[parent]["state"] == "children":
            _add_pending_children(parent, pending, inv, path)
    del pending[group]


def _host_line(line: str, group: str, origin: Origin, inv: InventoryData, seen: dict[str, int]) -> None:
    """One `name[:port] key=value ...` line of a hosts section."""
    try:
        # Without quotes, escapes or comments, POSIX shlex splitting is plain whitespace splitting.
        tokens = shlex.split(line, comments=True) if _SHLEX_SPECIAL.search(line) else line.split()
    except ValueError as exc:
        raise InventoryError(f"cannot split host line: {exc}", file=origin.file, line=origin.line, field=group) from None
    if not tokens:
        return
    try:
        names, port = expand_host_pattern(tokens[0])
    except RangeError as exc:
        raise InventoryError(str(exc), file=origin.file, line=origin.line, field=f"{group}.hosts.{tokens[0]}") from None
    variables: dict[str, Any] = {}
    for token in tokens[1:]:
        if "=" not in token:
            raise InventoryError(
                "expected key=value host variable", file=origin.file, line=origin.line,
                field=f"{group}.hosts.{tokens[0]}",
            )
        key, value = token.split("=", 1)
        variables[key] = parse_value(value)
    for name in names:
        if name in seen:
            raise InventoryError(
                f"host {name!r} is listed twice in section [{group}] (first on line {seen[name]})",
                file=origin.file, line=origin.line, field=f"{group}.hosts.{name}",
            )
        seen[name] = origin.line or 0
        inv.add_host(name, group, port, origin)
        for key, value in variables.items():
            inv.set_host_var(name, key, value, origin)
