"""`--limit` patterns with Ansible's meaning (ansible-core inventory/manager.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory import Inventory, InventoryError, load_inventory
from inventory.patterns import order_patterns, split_host_pattern

INI = """
[wsus]
wsus01.corp.example
wsus02.corp.example
wsus03.corp.example

[sccm]
sccm01.corp.example
wsus03.corp.example

[site_aarhus]
wsus01.corp.example
sccm01.corp.example

[windows:children]
wsus
sccm

[windows:vars]
ansible_connection=winrm
"""


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts"
    path.write_text(INI, encoding="utf-8")
    return load_inventory(path, env={}, require_credentials=False)


def names(inv: Inventory, limit: str | None) -> list[str]:
    return [h.name for h in inv.select(limit)]


def test_split_and_order() -> None:
    assert split_host_pattern("a:b:!c") == ["a", "b", "!c"]
    assert split_host_pattern("a,b , &c") == ["a", "b", "&c"]
    assert split_host_pattern("web[0:2]:db") == ["web[0:2]", "db"]
    assert split_host_pattern("host.example:5986") == ["host.example:5986"]
    assert split_host_pattern("2001:db8::1") == ["2001:db8::1"]
    assert order_patterns(["!a", "&b", "c"]) == ["c", "&b", "!a"]
    assert order_patterns(["!a"]) == ["all", "!a"]


@pytest.mark.parametrize(
    "limit, expected",
    [
        (None, ["wsus01.corp.example", "wsus02.corp.example", "wsus03.corp.example", "sccm01.corp.example"]),
        ("all", ["wsus01.corp.example", "wsus02.corp.example", "wsus03.corp.example", "sccm01.corp.example"]),
        ("sccm", ["sccm01.corp.example", "wsus03.corp.example"]),
        ("wsus02.corp.example", ["wsus02.corp.example"]),
        ("wsus0*", ["wsus01.corp.example", "wsus02.corp.example", "wsus03.corp.example"]),
        ("windows:!sccm", ["wsus01.corp.example", "wsus02.corp.example"]),
        ("wsus:&site_aarhus", ["wsus01.corp.example"]),
        ("!wsus", ["sccm01.corp.example"]),
        ("~wsus0[13]", ["wsus01.corp.example", "wsus03.corp.example"]),
        ("~corp", []),  # a regex is anchored at the start, as Ansible's re.match
        ("sccm,wsus02.corp.example", ["sccm01.corp.example", "wsus03.corp.example", "wsus02.corp.example"]),
        ("wsus[0]", ["wsus01.corp.example"]),
        ("wsus[-1]", ["wsus03.corp.example"]),
        ("wsus[1:]", ["wsus02.corp.example", "wsus03.corp.example"]),
        ("wsus[0:1]", ["wsus01.corp.example", "wsus02.corp.example"]),
        ("site_*:&sccm", ["sccm01.corp.example"]),
    ],
)
def test_limit(inv: Inventory, limit: str | None, expected: list[str]) -> None:
    if not expected:
        with pytest.raises(InventoryError):
            inv.select(limit)
        return
    assert names(inv, limit) == expected


def test_limit_file(inv: Inventory, tmp_path: Path) -> None:
    f = tmp_path / "retry"
    f.write_text("wsus02.corp.example\n# comment\nsccm01.corp.example\n", encoding="utf-8")
    assert names(inv, f"@{f}") == ["wsus02.corp.example", "sccm01.corp.example"]
    with pytest.raises(InventoryError, match="cannot read limit file"):
        inv.select(f"@{tmp_path / 'missing'}")


@pytest.mark.parametrize("limit, word", [("wsuss", "did you mean 'wsus'"), ("wsus:!sccn", "'sccn' matches no"),
                                         ("wsus:!wsus", "selects no host"), ("~wsus(", "invalid regular expression")])
def test_limit_errors(inv: Inventory, limit: str, word: str) -> None:
    with pytest.raises(InventoryError) as err:
        inv.select(limit)
    assert word in str(err.value) and err.value.field == "limit"
