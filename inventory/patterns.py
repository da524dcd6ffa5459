"""`--limit` host patterns, with Ansible's meaning.

Follows ansible-core `ansible/inventory/manager.py` (`split_host_pattern`, `order_patterns`,
`_match_one_pattern`, `_enumerate_matches`, `_split_subscript`): a limit is a list of patterns
separated by `,` (or by `:` when there is no comma); `@file` reads one pattern per line; each
pattern is a host or group name, a shell glob (`wsus*`), a regex (`~wsus0[1-3]`, anchored at the
start as Ansible's re.match), optionally
with a subscript (`webservers[0]`, `webservers[1:3]`, `webservers[-1]`); a leading `&` keeps only
hosts also matched, `!` removes hosts. Plain patterns are applied first, then `&`, then `!`; a
list of only `&`/`!` patterns starts from `all`. Globs and regexes match group names and, for
globs containing `.?*[` or regexes, host names too; matching is case-sensitive.

Where Ansible only warns, kbfix stops: a pattern that matches nothing (likely a typo that
would silently include or exclude servers) and a limit that selects no host are InventoryErrors.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from inventory.errors import InventoryError, did_you_mean
from inventory.ranges import split_port

if TYPE_CHECKING:
    from inventory.model import Host, Inventory

_SUBSCRIPT_RE = re.compile(r"^(.+)\[(?:(-?[0-9]+)|(-?[0-9]*):(-?[0-9]*))\]$")
_COLON_SPLIT_RE = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_host_pattern(limit: str) -> list[str]:
    """Split a limit into patterns: on `,` when present, else on `:` outside brackets."""
    text = limit.strip()
    if "," in text:
        parts = text.split(",")
    else:
        try:
            _, port = split_port(text)
        except ValueError:
            port = None
        # Ansible keeps a single `host:port`-looking pattern (or a bare IPv6 address) whole.
        parts = [text] if port is not None or _is_ipv6(text) else _COLON_SPLIT_RE.findall(text)
    return [p.strip() for p in parts if p.strip()]


def _expand_files(patterns: list[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        if p.startswith("@"):
            path = Path(p[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InventoryError(f"cannot read limit file: {exc}", file=path, field="limit") from None
            out.extend(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        else:
            out.append(p)
    return out


def order_patterns(patterns: list[str]) -> list[str]:
    """Plain patterns first, then `&` intersections, then `!` exclusions; `all` if no plain one."""
    regular = [p for p in patterns if p[0] not in "!&"]
    intersect = [p for p in patterns if p[0] == "&"]
    exclude = [p for p in patterns if p[0] == "!"]
    return (regular or ["all"]) + intersect + exclude


def _compile(expr: str) -> re.Pattern[str]:
    if expr.startswith("~"):
        try:
            return re.compile(expr[1:])
        except re.error as exc:
            raise InventoryError(f"invalid regular expression {expr[1:]!r}: {exc}", field="limit") from None
    return re.compile(fnmatch.translate(expr))


def _enumerate(inv: Inventory, expr: str) -> list[str]:
    """Host names for one pattern without subscript (Ansible's `_enumerate_matches`)."""
    rx = _compile(expr)
    is_regex = expr.startswith("~")
    match = rx.match  # Ansible's _match_list anchors regexes at the start too (re.match)
    groups = [g for g in inv.groups if match(g)]
    results: dict[str, None] = {}
    for g in groups:
        results.update(dict.fromkeys(inv.group_members(g)))
    if not groups or is_regex or any(c in expr for c in ".?*["):
        if not is_regex and not any(c in expr for c in "?*["):
            if expr in inv.hosts:  # plain name: a dict lookup, not a scan of every host
                results[expr] = None
        else:
            results.update(dict.fromkeys(h for h in inv.hosts if match(h)))
    return list(results)


def _subscript(pattern: str) -> tuple[str, slice | int | None]:
    if pattern.startswith("~"):
        return pattern, None
    m = _SUBSCRIPT_RE.match(pattern)
    if not m:
        return pattern, None
    expr, single, start, end = m.groups()
    if single is not None:
        return expr, int(single)
    return expr, slice(int(start) if start else 0, (int(end) + 1) if end else None)


def match_pattern(inv: Inventory, pattern: str) -> list[str]:
    """Host names matched by one pattern (without its `!`/`&` prefix), in inventory order."""
    expr, sub = _subscript(pattern)
    names = _enumerate(inv, expr)
    if isinstance(sub, int):
        try:
            return [names[sub]]
        except IndexError:
            return []
    if isinstance(sub, slice):
        return names[sub]
    return names


def select_hosts(inv: Inventory, limit: str | None) -> list[Host]:
    """Apply an Ansible limit to `inv`; None or empty means every host.

    Raises InventoryError (field `limit`) for a pattern matching no host or group, an invalid
    regex, an unreadable `@file`, or a limit that leaves no host.
    """
    if limit is None or not limit.strip():
        return list(inv.hosts.values())
    patterns = order_patterns(_expand_files(split_host_pattern(limit)))
    selected: dict[str, None] = {}
    for pattern in patterns:
        body = pattern[1:] if pattern[0] in "!&" else pattern
        if not body:
            raise InventoryError(f"empty pattern {pattern!r} in limit", field="limit")
        matched = match_pattern(inv, body)
        if not matched:
            raise InventoryError(
                f"pattern {body!r} matches no host or group"
                + did_you_mean(body, [*inv.groups, *list(inv.hosts)[:5000]]),
                field="limit",
            )
        if pattern[0] == "!":
            drop = set(matched)
            selected = {h: None for h in selected if h not in drop}
        elif pattern[0] == "&":
            keep = set(matched)
            selected = {h: None for h in selected if h in keep}
        else:
            selected.update(dict.fromkeys(matched))
    if not selected:
        raise InventoryError(f"limit {limit!r} selects no host", field="limit")
    # In the order patterns matched them, as Ansible's get_hosts with `order: inventory`.
    return [inv.hosts[name] for name in selected]
