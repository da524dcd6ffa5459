"""kbfix reads Ansible's documentation examples to the hosts, groups and vars Ansible reports.

The expected JSON/graph files were produced by ansible-core 2.19.14 (`ansible-inventory --list`
/ `--graph`); see tests/data/inventory/ansible/SOURCES.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inventory import Inventory, InventoryError, load_inventory
from inventory.render import graph, plain

DATA = Path(__file__).parent / "data" / "inventory" / "ansible"

CASES = sorted(p.name[: -len(".json")] for p in DATA.glob("*.json"))


def _source(case: str) -> Path:
    path = DATA / case
    return path / "hosts" if path.is_dir() else path


def ansible_list(inv: Inventory) -> dict[str, Any]:
    """Our inventory in the shape of `ansible-inventory --list` (cli/inventory.py json_inventory)."""
    out: dict[str, Any] = {"_meta": {"hostvars": {n: plain(h.vars) for n, h in inv.hosts.items() if h.vars}}}

    def walk(name: str) -> None:
        g = inv.groups[name]
        entry: dict[str, Any] = {}
        if name != "all" and g.hosts:
            entry["hosts"] = list(g.hosts)
        if g.children:
            entry["children"] = list(g.children)
        if entry:
            out[name] = entry
        for child in g.children:
            walk(child)

    walk("all")
    return out


def test_cases_found() -> None:
    assert len(CASES) >= 14


@pytest.mark.parametrize("case", CASES)
def test_same_as_ansible_inventory_list(case: str) -> None:
    expected = json.loads((DATA / f"{case}.json").read_text(encoding="utf-8"))
    expected["_meta"].pop("profile", None)
    got = ansible_list(load_inventory(_source(case), env={}, require_credentials=False))
    assert got["_meta"]["hostvars"] == expected["_meta"]["hostvars"]
    assert {k: v for k, v in got.items() if k != "_meta"} == {k: v for k, v in expected.items() if k != "_meta"}


@pytest.mark.parametrize(
    "case, source", [("nested.yml", "nested.yml"), ("host_vars_inline.ini", "host_vars_inline.ini"),
                     ("windows_site", "windows_site/hosts")]
)
def test_graph_same_as_ansible(case: str, source: str) -> None:
    expected = (DATA / f"{case}.graph.txt").read_text(encoding="utf-8").splitlines()
    inv = load_inventory(DATA / source, env={}, require_credentials=False)
    assert graph(inv) == expected


def test_doc_ini_with_undeclared_children_is_refused_like_ansible() -> None:
    # Ansible: "Section [usa:children] includes undefined group 'northeast'."
    with pytest.raises(InventoryError) as err:
        load_inventory(DATA / "nested.ini", env={})
    assert err.value.file == DATA / "nested.ini"
    assert err.value.line == 21  # the `northeast` line under [usa:children]
    assert "northeast" in err.value.message and err.value.field == "usa.children"


def test_windows_site_endpoints() -> None:
    inv = load_inventory(DATA / "windows_site" / "hosts", env={"KBFIX_PASSWORD": "pw-from-env"})
    web = inv.hosts["web01"]
    assert web.endpoint is None and web.skipped_reason == "ansible_connection is ssh, not winrm"
    w1 = inv.hosts["wsus01.corp.example"].endpoint
    assert w1 is not None
    assert (w1.address, w1.scheme, w1.effective_port, w1.transport) == ("10.0.0.1", "https", 5986, "ntlm")
    assert w1.username == "CORP\\svc_kbfix" and w1.cert_validation == "ignore"
    assert (w1.timeouts.operation, w1.timeouts.read) == (40, 60)
    assert w1.password is not None and w1.password.reveal() == "pw-from-env"
    w10 = inv.hosts["wsus10.corp.example"]
    assert w10.endpoint is not None and w10.endpoint.url == "http://wsus10.corp.example:5985/wsman"
    assert w10.site == "CPH HQ"
    sccm = inv.hosts["sccm01.corp.example"]
    assert sccm.endpoint is not None and sccm.endpoint.transport == "kerberos"
    assert sccm.endpoint.message_encryption == "auto"  # 20-site.yml is read after 10-connection
    assert sccm.roles == ("configmgr_site_server",) and sccm.site == "AAR"
    assert inv.hosts["wsus02.corp.example"].roles == ("wsus_server",)
    assert inv.hosts["wsus02.corp.example"].site == "ODE"
    assert any(p.name == "20-site.yml" for p in inv.sources)
