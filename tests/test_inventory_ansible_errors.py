"""Ansible INI/YAML inventories: quirks kept, and bad input reported by file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory import InventoryError, load_inventory


def _load(tmp_path: Path, text: str, name: str = "hosts"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_inventory(path, env={}, require_credentials=False)


def test_ini_values_are_python_literals_like_ansible(tmp_path: Path) -> None:
    # Expected values checked against ansible-core 2.19.14 `ansible-inventory --list` (shlex drops the quotes in g).
    inv = _load(tmp_path, "[g]\nh a=1 b=True c=FALSE d=[1,2] e='x y' f=0123 g={'k':1} i=1.5 j=None\n[g:vars]\nv=False\nw=a b\n")
    assert dict(inv.hosts["h"].vars) == {
        "a": 1, "b": True, "c": "FALSE", "d": [1, 2], "e": "x y", "f": "0123", "g": "{k:1}", "i": 1.5, "j": None,
        "v": False, "w": "a b",
    }


def test_ini_vars_before_group_declared_later(tmp_path: Path) -> None:
    inv = _load(tmp_path, "[late:vars]\nx=1\n[parent:children]\nlate\n[late]\nh\n")
    assert inv.hosts["h"].vars["x"] == 1 and inv.hosts["h"].groups == ("late", "parent")


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ("[g:vras]\nh\n", 1, None, ["unknown type 'vras'", "did you mean 'vars'"]),
        ("[g]\nh novalue\n", 2, "g.hosts.h", ["key=value"]),
        ("[g:vars]\njustakey\n", 2, "g.vars", ["key=value"]),
        ("[only:vars]\nx=1\n", 1, "only.vars", ["never declared"]),
        ("[g]\nh\nh\n", 3, "g.hosts.h", ["twice", "line 2"]),
        ("[g]\nh:99999\n", 2, "g.hosts.h:99999", ["65535"]),
        ("[g]\nw[01:3]\n", 2, "g.hosts.w[01:3]", ["equal-length"]),
        ("[g]\nh 'unclosed\n", 2, "g", ["cannot split"]),
        ("[g x]\n", 1, None, ["invalid section header"]),
        ("[g]\nh ansible_connection=winrm ansible_port=http\n", 2, "ansible_port", ["integer"]),
        ("[g]\nh ansible_connection=winrm ansible_winrm_transport=ntml\n", 2, "ansible_winrm_transport", ["'ntlm'", "got 'ntml'"]),
        ("[g]\nh ansible_connection=winrm roles=wsus_sever\n", 2, "roles", ["did you mean 'wsus_server'"]),
        ("[a:children]\nb\n[b:children]\na\n", 4, "b.children", ["loop"]),
    ],
)
def test_ini_errors(tmp_path: Path, text: str, line: int, field: str | None, words: list[str]) -> None:
    with pytest.raises(InventoryError) as err:
        _load(tmp_path, text)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    for word in words:
        assert word in err.value.message, str(err.value)


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ("g:\n  host:\n    h1:\n", 2, "g.host", ["did you mean 'hosts'"]),
        ("g:\n  hosts: [h1]\n", 2, "g.hosts", ["must be a mapping"]),
        ("g:\n  hosts:\n    h1: value\n", 3, "g.hosts.h1", ["mapping"]),
        ("g:\n  hosts:\n    123:\n", 3, "g.hosts.123", ["quote"]),
        ("g: [1]\n", 1, "g", ["must be a mapping"]),
        ("plugin: aws_ec2\n", 1, "plugin", ["plugin configuration"]),
        ("g:\n  hosts:\n    h1:\n    h1:\n", 4, None, ["appears twice"]),
        ("- a\n", 1, None, ["must be a mapping of groups"]),
    ],
)
def test_yaml_errors(tmp_path: Path, text: str, line: int, field: str | None, words: list[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ansible-inventory: a plugin config cannot be read
    with pytest.raises(InventoryError) as err:
        _load(tmp_path, text, "inv.yml")
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    for word in words:
        assert word in err.value.message, str(err.value)


def test_winrm_mapping_and_defaults(tmp_path: Path) -> None:
    inv = _load(tmp_path, """
all:
  vars:
    ansible_connection: winrm
    ansible_user: CORP\\svc
  hosts:
    a: {ansible_port: 5985}
    b: {ansible_winrm_scheme: http, ansible_winrm_path: /custom, ansible_winrm_ca_trust_path: /ca.pem,
        ansible_winrm_operation_timeout_sec: 50, ansible_winrm_connection_timeout: 7, kbfix_allow_unencrypted: true,
        ansible_winrm_transport: [basic, ntlm], kbfix_command_timeout: 900}
    c: {ansible_connection: psrp}
""", "inv.yml")
    a = inv.hosts["a"].endpoint
    assert a is not None and a.url == "http://a:5985/wsman"  # Ansible: http only on port 5985
    b = inv.hosts["b"].endpoint
    assert b is not None and b.url == "http://b:5985/custom" and b.ca_trust_path == "/ca.pem"
    assert (b.transport, b.allow_unencrypted) == ("basic", True)
    assert (b.timeouts.connect, b.timeouts.operation, b.timeouts.read, b.timeouts.command) == (7, 50, 60, 900)
    assert inv.hosts["c"].skipped_reason == "ansible_connection is psrp, not winrm"
    assert inv.groups["all"].vars["ansible_user"] == "CORP\\svc"


def test_unset_connection_is_skipped(tmp_path: Path) -> None:
    inv = _load(tmp_path, "h1\n")
    assert inv.hosts["h1"].endpoint is None
    assert "Ansible's default is ssh" in (inv.hosts["h1"].skipped_reason or "")
    assert inv.hosts["h1"].groups == ("ungrouped",)


def test_dynamic_script_without_ansible_inventory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InventoryError, match=r"dynamic inventory .*ansible-inventory.*not on PATH"):
        _load(tmp_path, "#!/usr/bin/env python3\nprint('{}')\n")
