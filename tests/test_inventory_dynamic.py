"""Dynamic inventories through `ansible-inventory --list`: the JSON Ansible printed for the
documentation examples loads back to the same hosts, groups and vars; vault values in it are
opened; without ansible-inventory on PATH the error says what to do.

`ansible-inventory` itself is not a kbfix dependency: these tests put a stand-in on PATH that
checks its arguments and prints JSON that the real ansible-inventory 2.19.14 produced
(tests/data/inventory/ansible/SOURCES.md).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from inventory import InventoryError, load_inventory
from inventory.vault_secrets import build_keyring
from remoting.endpoint import Secret
from tests.test_inventory_ansible_compat import CASES, DATA, ansible_list

VAULT = Path(__file__).parent / "data" / "inventory" / "vault"


def _stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_file: Path, exit_code: int = 0) -> Path:
    """`ansible-inventory` on PATH printing `json_file` for `-i SOURCE --list`; returns the source."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / "ansible-inventory"
    tool.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "-i" ] && [ "$3" = "--list" ] && [ -f "$2" ] || { echo "bad arguments: $*" >&2; exit 9; }\n'
        + (f'echo "ERROR! script failed" >&2; exit {exit_code}\n' if exit_code else f'cat "{json_file}"\n'),
        encoding="utf-8")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    source = tmp_path / "inventory.py"
    source.write_text("#!/usr/bin/env python3\n# a dynamic inventory script (run by ansible-inventory only)\n",
                      encoding="utf-8")
    return source


@pytest.mark.parametrize("case", CASES)
def test_ansible_inventory_json_loads_to_the_same_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            case: str) -> None:
    json_file = DATA / f"{case}.json"
    expected = json.loads(json_file.read_text(encoding="utf-8"))
    expected["_meta"].pop("profile", None)
    inv = load_inventory(_stand_in(tmp_path, monkeypatch, json_file), env={}, require_credentials=False)
    got = ansible_list(inv)
    assert got["_meta"]["hostvars"] == expected["_meta"]["hostvars"]
    assert {k: v for k, v in got.items() if k != "_meta"} == {k: v for k, v in expected.items() if k != "_meta"}


def test_plugin_config_goes_through_ansible_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path, monkeypatch, DATA / "windows_site.json")
    plugin = tmp_path / "aws_ec2.yml"
    plugin.write_text("plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n", encoding="utf-8")
    inv = load_inventory(plugin, env={}, require_credentials=False)
    assert "sccm01.corp.example" in inv.hosts
    assert inv.hosts["sccm01.corp.example"].endpoint is not None


def test_vault_values_in_the_json_are_decrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envelope = (VAULT / "layouts" / "inline" / "group_vars" / "windows.yml").read_text(encoding="utf-8")
    envelope = "\n".join(line.strip() for line in envelope.splitlines()[1:]) + "\n"
    doc = {"_meta": {"hostvars": {"wsus01": {"ansible_connection": "winrm", "ansible_user": "LAB\\kbfix",
                                             "ansible_password": {"__ansible_vault": envelope}}}},
           "all": {"children": ["ungrouped", "windows"]}, "windows": {"hosts": ["wsus01"]}}
    json_file = tmp_path / "out.json"
    json_file.write_text(json.dumps(doc), encoding="utf-8")
    source = _stand_in(tmp_path, monkeypatch, json_file)
    inv = load_inventory(source, env={}, vault=build_keyring(password_files=[VAULT / "vault-pass.txt"]))
    assert inv.hosts["wsus01"].endpoint.password == Secret("Secret-1")  # type: ignore[union-attr]
    assert inv.hosts["wsus01"].groups == ("windows",)


def test_failing_ansible_inventory_names_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _stand_in(tmp_path, monkeypatch, DATA / "basic.yml.json", exit_code=4)
    with pytest.raises(InventoryError) as err:
        load_inventory(source, env={})
    assert err.value.file == source
    assert "exit 4" in err.value.message and "script failed" in err.value.message


def test_without_ansible_inventory_the_error_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "inventory.py"
    source.write_text("#!/usr/bin/env python3\n", encoding="utf-8")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InventoryError) as err:
        load_inventory(source, env={})
    assert "pip install ansible-core" in err.value.message and "--list -y" in err.value.message
