"""Property tests: generated kbfix inventories round-trip; garbage only ever raises InventoryError."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory import Inventory, InventoryError, load_inventory
from inventory.export import to_kbfix_document

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.corp\.example)?", fullmatch=True)
var_names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(
    lambda n: not any(s in n for s in ("pass", "secret", "token", "credential"))
    and n not in ("site", "roles") and not n.startswith(("ansible_", "kbfix_"))
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=12),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(var_names, c, max_size=3), max_leaves=6)
var_maps = st.dictionaries(var_names, values, max_size=4)


@st.composite
def kbfix_documents(draw: st.DrawFn) -> dict[str, Any]:
    host_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    hosts = {}
    for name in host_names:
        entry: dict[str, Any] = {"address": draw(st.sampled_from(["127.0.0.1", "10.1.2.3", name]))}
        if draw(st.booleans()):
            entry["port"] = draw(st.integers(1, 65535))
        if draw(st.booleans()):
            entry["vars"] = draw(var_maps)
        if draw(st.booleans()):
            entry["site"] = draw(st.sampled_from(["HQ", "AAR", "CPH"]))
        hosts[name] = entry
    group_names = draw(st.lists(st.from_regex(r"g[a-z0-9_]{0,6}", fullmatch=True), max_size=4, unique=True))
    groups: dict[str, Any] = {}
    for i, g in enumerate(group_names):
        entry = {"hosts": draw(st.lists(st.sampled_from(host_names), max_size=4, unique=True)), "vars": draw(var_maps)}
        later = group_names[i + 1:]
        if later and draw(st.booleans()):
            entry["children"] = draw(st.lists(st.sampled_from(later), max_size=2, unique=True))
        groups[g] = entry
    defaults = {"username": "LAB\\kbfix", "transport": draw(st.sampled_from(["ntlm", "kerberos", "basic"])),
                "scheme": draw(st.sampled_from(["http", "https"])), "vars": draw(var_maps)}
    return {"kbfix_inventory": 1, "defaults": defaults, "groups": groups, "hosts": hosts}


@contextmanager
def _file(text: str, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        yield path


def _load_text(text: str, name: str = "inv.yml") -> Inventory:
    with _file(text, name) as path:
        return load_inventory(path, env={"KBFIX_PASSWORD": "x"})


def _snapshot(inv: Inventory) -> dict[str, Any]:
    return {
        n: (h.groups, dict(h.vars), h.roles, h.site, h.skipped_reason, h.endpoint)
        for n, h in inv.hosts.items()
    }


@FAST
@given(kbfix_documents())
def test_generated_inventory_loads_as_written(doc: dict[str, Any]) -> None:
    inv = _load_text(yaml.safe_dump(doc, sort_keys=False))
    assert list(inv.hosts) == list(doc["hosts"])
    for name, entry in doc["hosts"].items():
        host = inv.hosts[name]
        ep = host.endpoint
        assert ep is not None and ep.address == entry["address"] and ep.port == entry.get("port")
        # precedence: defaults.vars < groups (parents before children, then by name) < host vars
        expected: dict[str, Any] = dict(doc["defaults"]["vars"])
        groups = [inv.groups[g] for g in host.groups]
        for g in sorted(groups, key=lambda g: (g.depth, g.priority, g.name)):
            expected.update(doc["groups"].get(g.name, {}).get("vars", {}))
        expected.update(entry.get("vars", {}))
        assert dict(host.vars) == expected
        member_of = {g for g, e in doc["groups"].items() if name in e["hosts"]}
        assert member_of <= set(host.groups)


@FAST
@given(kbfix_documents())
def test_dump_then_load_gives_the_same_hosts(doc: dict[str, Any]) -> None:
    first = _load_text(yaml.safe_dump(doc, sort_keys=False))
    again = _load_text(yaml.safe_dump(to_kbfix_document(first), sort_keys=False))
    assert _snapshot(again) == _snapshot(first)


def _only_inventory_errors(text: str, name: str) -> None:
    try:
        with _file(text, name) as path:
            load_inventory(path, env={}, require_credentials=False).select("all")
    except InventoryError:
        pass


ini_garbage = st.lists(
    st.text(alphabet="[]:=#;'\"\\ \tabcwsus01._-,!&*~{}()", max_size=30), max_size=8
).map("\n".join)


@FAST
@given(st.text(max_size=200))
def test_garbage_text(text: str) -> None:
    _only_inventory_errors(text, "inv.yml")
    _only_inventory_errors(text, "hosts")


@FAST
@given(ini_garbage)
def test_garbage_ini(text: str) -> None:
    _only_inventory_errors(text, "hosts")


yaml_garbage = st.recursive(
    st.one_of(scalars, st.sampled_from(["hosts", "vars", "children", "h[1:3]", "x:99999", "[a:]", "kbfix_inventory"])),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.one_of(st.sampled_from(
        ["hosts", "vars", "children", "groups", "defaults", "port", "address", "timeouts", "roles", "ansible_port",
         "ansible_connection", "w[01:3]"]), st.text(max_size=5), st.integers()), c, max_size=4),
    max_leaves=12,
)


@FAST
@given(yaml_garbage, st.booleans())
def test_garbage_yaml_structures(data: Any, kbfix: bool) -> None:
    if kbfix:
        data = {"kbfix_inventory": 1, **data} if isinstance(data, dict) else {"kbfix_inventory": 1, "hosts": data}
    _only_inventory_errors(yaml.safe_dump(data), "inv.yml")
