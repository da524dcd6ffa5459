"""Bounds on what one host can make the audit store keep (issue 20 finding 6).

A compromised host decides how much text it answers; stored as is, 15 MiB of facts per answer
added 36.8 MB per check of one host to an append-only store. `bound_strings` cuts every string
before it is stored; `AuditStore.record_host` also keeps a per-host, per-run byte budget and,
past it, replaces the facts by a note and drops evidence log lines (`without_lines`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remoting.redaction import REDACTED, is_secret_key, redact

#: Longest string kept in stored facts and evidence, characters; the rest is replaced by a note.
MAX_STORED_STRING = 8 * 1024
#: Bytes of facts, results and evidence one host may add to the store in one run. A host that
#: answered 15 MiB of facts added 36.8 MB per check before (issue 20 finding 6); past the budget
#: the facts are replaced by a note and evidence lines are dropped, the verdict is always kept.
HOST_RUN_BUDGET = 4 * 1024 * 1024


def bound_strings(value: Any, limit: int = MAX_STORED_STRING) -> Any:
    """A JSON-ready copy of `value` with every string longer than `limit` characters cut, ending
    in `…[N more characters not stored]`. Keys are kept whole (they are names, not data).
    (The store's rows go through `bounded_tree`, which shares what this rule leaves unchanged;
    this plain form is its rule and its fallback for what is not a plain JSON tree.)"""
    if isinstance(value, str):
        return value if len(value) <= limit else _cut(value, limit)
    if isinstance(value, Mapping):
        return {k: bound_strings(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [bound_strings(v, limit) for v in value]
    return value


def _cut(text: str, limit: int) -> str:
    return f"{text[:limit]}…[{len(text) - limit} more characters not stored]"


def redacted_bounded(value: Any, limit: int = MAX_STORED_STRING) -> Any:
    """`bound_strings(redact(value))`: secret-looking keys' values become REDACTED, keys become
    str, long strings are cut (remoting.redaction.redact)."""
    return bound_strings(redact(value), limit)


def _other(value: Any, limit: int, secrets: bool) -> Any:
    return redacted_bounded(value, limit) if secrets else bound_strings(value, limit)


_PLAIN_LEAVES = frozenset({int, bool, type(None)})  # besides str: ujson writes these as json does
_CONTAINERS = frozenset({dict, list})  # an empty one has nothing to bound
#: str keys known not to be secret-looking (a set lookup is cheaper than is_secret_key's cache;
#: a host's facts repeat the same few hundred names). Grows to _PLAIN_KEYS_MAX names at most.
_PLAIN_KEYS: set[str] = set()
_PLAIN_KEYS_MAX = 4096


def _secret(key: str) -> bool:
    """is_secret_key(key), remembering a plain key in _PLAIN_KEYS (`key` is an exact str)."""
    if is_secret_key(key):
        return True
    if len(_PLAIN_KEYS) < _PLAIN_KEYS_MAX:
        _PLAIN_KEYS.add(key)
    return False


def bounded_tree(value: Any, limit: int = MAX_STORED_STRING, *, secrets: bool) -> tuple[Any, bool]:
    """(`redacted_bounded(value, limit)` when `secrets`, else `bound_strings(value, limit)`, plain).

    The same value, sharing with `value` every dict and list the rule leaves as it was (copy on
    write; cost, issue 19: a host's facts were copied whole to be encoded once, though only a
    secret-looking key or an over-long string changes them). Share the result only for
    encoding: changing it may change `value`. plain: the result holds only dict with str keys,
    list, str, int, bool and None, exact types (kbfix/store/jsontext.py may then use ujson)."""
    odd: list[bool] = []  # a non-plain node was seen (appended to, never read but for emptiness)
    kind = type(value)
    out: Any
    if kind is dict:
        out = _cow_dict(value, limit, secrets, odd)
    elif kind is list:
        out = _cow_list(value, limit, secrets, odd)
    elif kind is str:
        return (value if len(value) <= limit else _cut(value, limit)), True
    elif kind in _PLAIN_LEAVES:
        return value, True
    else:
        return _other(value, limit, secrets), False
    return out, not odd


def _cow_dict(value: dict[Any, Any], limit: int, secrets: bool, odd: list[bool]) -> dict[Any, Any]:
    """One dict of `bounded_tree`: `value` itself when nothing in it changes, else a copy (same
    key order) with the changed values. A key that is not a str: the whole dict by the plain rule
    (`_other`: redacted_bounded makes such keys str, which may reorder or merge them)."""
    out: dict[Any, Any] | None = None
    for k, v in value.items():
        if type(k) is not str:
            odd.append(True)
            return _other(value, limit, secrets)
        if secrets and k not in _PLAIN_KEYS and _secret(k):
            new: Any = REDACTED if len(REDACTED) <= limit else _cut(REDACTED, limit)
        else:
            kind = type(v)
            if kind is str:
                if len(v) <= limit:
                    continue
                new = _cut(v, limit)
            elif kind in _PLAIN_LEAVES or (not v and kind in _CONTAINERS):  # many facts are `{}`/`[]`
                continue
            else:
                new = _cow_value(v, kind, limit, secrets, odd)
        if new is not v:
            if out is None:
                out = dict(value)  # same keys in the same order; later values are overwritten in place
            out[k] = new
    return value if out is None else out


def _cow_list(value: list[Any], limit: int, secrets: bool, odd: list[bool]) -> list[Any]:
    """One list of `bounded_tree` (see `_cow_dict`)."""
    out: list[Any] | None = None
    for i, v in enumerate(value):
        kind = type(v)
        if kind is str:
            if len(v) <= limit:
                continue
            new: Any = _cut(v, limit)
        elif kind in _PLAIN_LEAVES or (not v and kind in _CONTAINERS):
            continue
        else:
            new = _cow_value(v, kind, limit, secrets, odd)
        if new is not v:
            if out is None:
                out = list(value)
            out[i] = new
    return value if out is None else out


def _cow_value(v: Any, kind: type, limit: int, secrets: bool, odd: list[bool]) -> Any:
    """A non-empty container or an odd leaf of `bounded_tree` (strings and plain leaves are
    handled inline by `_cow_dict`/`_cow_list`, the common case): bounded, or `v` itself."""
    if kind is dict:
        return _cow_dict(v, limit, secrets, odd)
    if kind is list:
        return _cow_list(v, limit, secrets, odd)
    odd.append(True)
    return _other(v, limit, secrets)


def without_lines(result: dict[str, Any], note: str) -> dict[str, Any]:
    """`result` (a HostResult dump) with every evidence's log lines dropped and `note` added."""
    for finding in result.get("findings", []):
        for key in ("evidence", "verification"):
            for ev in finding.get(key, []) or []:
                if ev.get("lines"):
                    ev["lines"] = []
                    ev["note"] = note
    return result
