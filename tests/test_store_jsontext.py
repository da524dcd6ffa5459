"""The store's JSON text made faster (issue 19) is the same text, character for character:
ujson against json for every code point (as string and as key), integers past 64 bits, key order
and plain trees (property); `bounded_tree` (copy on write) against the old walks, leaving its input
untouched and saying "plain" only of plain trees; a host's stored rows and row hashes as before."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kbfix.report.sample import fleet
from kbfix.store import chain, jsontext
from kbfix.store.bounds import bound_strings, bounded_tree, redacted_bounded
from kbfix.store.jsontext import dumps_canonical, dumps_stored
from kbfix.store.rows import dumps_json

SEPARATORS = [(", ", ": "), (",", ":")]


def _json(value: Any, separators: tuple[str, str]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=separators, default=str)


def _fast(value: Any, separators: tuple[str, str]) -> str:
    return dumps_stored(value, plain=True) if separators == SEPARATORS[0] else dumps_canonical(value, plain=True)


def test_ujson_is_used_here() -> None:
    assert jsontext.FAST, "ujson missing or writing differently: every test below would only test json"


@pytest.mark.parametrize("separators", SEPARATORS)
def test_every_code_point_as_string_and_as_key(separators: tuple[str, str]) -> None:
    chars = [chr(c) for c in range(0x110000)]  # lone surrogates included: json keeps them, so must ujson
    strings = [f"a{c}b" for c in chars]
    assert _fast(strings, separators) == _json(strings, separators)
    keys = {f"{c}k": i for i, c in enumerate(chars)}  # sorted by code point, as Python sorts str
    assert _fast(keys, separators) == _json(keys, separators)


@pytest.mark.parametrize("separators", SEPARATORS)
def test_integers_and_literals(separators: tuple[str, str]) -> None:
    values = [0, -1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**40, -(10**40), True, False, None,
              [], {}, [[]], {"": {}}, "", "/", "</script>"]
    for v in values:
        assert _fast(v, separators) == _json(v, separators), v


_PLAIN_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                        st.text(max_size=12))
_PLAIN = st.recursive(_PLAIN_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=5)),
                      max_leaves=40)


@settings(max_examples=400)
@given(_PLAIN)
@example({"b": 1, "a": [True, None, "\x00\u2028\ud800\U0001f600"], "é": {"": -(2**70)}})
def test_plain_trees_are_written_as_json_writes_them(value: Any) -> None:
    for separators in SEPARATORS:
        assert _fast(value, separators) == _json(value, separators)


def test_what_is_not_plain_or_too_deep_is_left_to_json() -> None:
    assert dumps_stored({"f": 1e-7}) == '{"f": 1e-07}'  # ujson writes 1e-7
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(RecursionError):  # as json.dumps always raised
        dumps_stored(deep, plain=True)


# ---- bounded_tree: the old rule, copy on write ------------------------------------------------------

_KEYS = st.one_of(st.text(max_size=10), st.integers(), st.booleans(),
                  st.sampled_from(["password", "api_key", "token_hits", "ansible_ssh_private_key_file", "Secret"]))
_LEAF = st.one_of(_PLAIN_LEAF, st.text(min_size=15, max_size=40), st.floats(allow_nan=False),
                  st.datetimes(timezones=st.just(timezone.utc)), st.builds(Path, st.text(max_size=5)))
_TREE = st.recursive(_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.tuples(c, c), st.dictionaries(_KEYS, c, max_size=4),
                                                 st.dictionaries(st.text(max_size=6), c, max_size=4),
                                                 st.frozensets(st.integers(), max_size=3)), max_leaves=30)


def _text(dumps: Any) -> str:
    """The text, or the error's type (mixed key types cannot be sorted: json raised, so must we)."""
    try:
        return str(dumps())
    except TypeError as exc:
        return f"TypeError {type(exc).__name__}"


def _is_plain(value: Any) -> bool:
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    if type(value) is list:
        return all(_is_plain(v) for v in value)
    return type(value) in (str, int, bool, type(None))


@settings(max_examples=600)
@given(_TREE, st.integers(min_value=0, max_value=20), st.booleans())
@example({"token_hits": 0, "a": {"b": "x" * 30}}, 8, True)
@example({1: "a", "1": "b"}, 8, True)
def test_bounded_tree_is_the_old_walk_and_its_text(value: Any, limit: int, secrets: bool) -> None:
    before = copy.deepcopy(value)
    tree, plain = bounded_tree(value, limit, secrets=secrets)
    old = redacted_bounded(value, limit) if secrets else bound_strings(value, limit)
    assert tree == old
    assert _text(lambda: dumps_stored(tree, plain=plain)) == _text(lambda: dumps_json(old))
    assert not plain or _is_plain(tree)  # never "plain" for a tree that is not
    if _is_plain(value):
        assert plain
    assert value == before  # the input is never changed


def test_bounded_tree_shares_what_it_leaves_alone() -> None:
    facts = {"dll": {"version": "3.1.6001.65", "paths": ["C:\\a"]}, "password": "hunter2", "log": {"line": "x" * 50}}
    tree, plain = bounded_tree(facts, 20, secrets=True)
    assert plain and tree is not facts and tree["dll"] is facts["dll"]
    assert tree["password"] == "***redacted***" and tree["log"]["line"] == "x" * 20 + "…[30 more characters not stored]"
    assert facts["password"] == "hunter2" and facts["log"]["line"] == "x" * 50
    same, _ = bounded_tree(facts["dll"], 20, secrets=True)
    assert same is facts["dll"]


# ---- the rows a host adds, and their hashes ------------------------------------------------------------

def test_host_rows_text_and_row_hashes_are_the_old_ones() -> None:
    from kbfix.store.audit import AuditStore

    results = fleet(6, 3)
    facts = {"dll": {"version": "3.1.6001.65", "size": 139, "ok": True, "none": None, "ratio": 0.5},
             "password": "hunter2", "lines": ["é\u2028\x00" + "y" * 9000], 7: "int key"}
    store = AuditStore.__new__(AuditStore)  # _host_rows needs the budget state only
    store.host_run_budget, store.disk_full, store._host_bytes = 10**9, False, {}
    for r in results:
        for f in (facts, {"plain": ["a", 1, None]}, None):
            rows = store._host_rows("run", r, "final", f, "2026-11-23T12:00:00+00:00")
            dumped = bound_strings(r.model_dump(mode="json", exclude={"facts", "vars"}))
            assert rows.result_row["result"] == dumps_json(dumped)
            assert rows.facts_json == (None if f is None else dumps_json(redacted_bounded(f)))
            assert [ev for *_, ev in rows.findings] == [dumps_json(x.get("evidence", [])) for x in dumped["findings"]]
            row = {"seq": 3, **rows.result_row, "none": None}
            old = json.dumps(["host_results", {k: v for k, v in row.items() if v is not None}], sort_keys=True,
                             ensure_ascii=False, separators=(",", ":"))
            assert chain.row_hash("host_results", row) == hashlib.sha256(old.encode()).hexdigest()
    blob = {"seq": 1, "data": b"\x00\xff", "at": datetime(2026, 1, 1).isoformat()}
    assert chain.row_hash("t", blob) == hashlib.sha256(json.dumps(["t", {"seq": 1, "data": {"blob": "00ff"}, "at": blob["at"]}],
                                                                  sort_keys=True, ensure_ascii=False,
                                                                  separators=(",", ":")).encode()).hexdigest()


def test_a_host_past_its_budget_gets_the_old_note_and_keeps_its_lines_in_memory() -> None:
    from kbfix.store.audit import AuditStore
    from kbfix.store.bounds import without_lines
    from playbooks.model import LogLine

    store = AuditStore.__new__(AuditStore)
    store.host_run_budget, store.disk_full, store._host_bytes = 10, False, {}
    line = LogLine(file="C:\\x.log", offset=7, text="SyncUpdates failure", before=["a"], after=["b"])
    results = [r.with_findings([f.model_copy(update={"evidence": [ev.model_copy(update={"lines": [line]})
                                                                   for ev in f.evidence]}) for f in r.findings])
               for r in fleet(4, 3)]
    assert any(ev.lines for r in results for f in r.findings for ev in f.evidence)
    for r in results:
        lines_before = [ev.lines for f in r.findings for ev in f.evidence]
        rows = store._host_rows("run", r, "final", {"a": 1}, "2026-11-23T12:00:00+00:00")
        note = "not stored: this host passed its 10 byte store budget for run run"
        old = dumps_json(without_lines(bound_strings(r.model_dump(mode="json", exclude={"facts", "vars"})),
                                       f"log lines {note}"))
        assert rows.result_row["result"] == old
        assert [ev for *_, ev in rows.findings] == [dumps_json(x.get("evidence", [])) for x in json.loads(old)["findings"]]
        assert [ev.lines for f in r.findings for ev in f.evidence] == lines_before  # the result itself is untouched
