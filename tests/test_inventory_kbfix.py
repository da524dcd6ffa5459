"""kbfix YAML inventories: the lab's format, precedence, ranges and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory import InventoryError, load_inventory

DATA = Path(__file__).parent / "data" / "inventory" / "kbfix"


def _write(tmp_path: Path, text: str, name: str = "inv.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, name: str = "inv.yml") -> InventoryError:
    path = _write(tmp_path, text, name)
    with pytest.raises(InventoryError) as err:
        load_inventory(path, env={}, require_credentials=False)
    assert err.value.file == path
    return err.value


def test_lab_format_loads_to_endpoints() -> None:
    inv = load_inventory(DATA / "lab.yaml", env={})
    assert list(inv.hosts) == ["WSUS01", "SCCM01", "client01", "client02", "client03", "OLD01"]
    wsus = inv.hosts["WSUS01"]
    ep = wsus.endpoint
    assert ep is not None
    assert ep.url == "http://127.0.0.1:40123/wsman"
    assert (ep.transport, ep.username, ep.cert_validation, ep.message_encryption) == ("ntlm", "LAB\\kbfix", "validate", "auto")
    assert ep.password is not None and ep.password.reveal() == "Lab-Secret-1"
    assert (ep.timeouts.connect, ep.timeouts.operation, ep.timeouts.read, ep.timeouts.command) == (5, 20, 30, 300)
    assert wsus.roles == ("wsus_server",) and wsus.site == "HQ"
    assert dict(wsus.vars) == {"owner": "ops", "lab": True, "site": "HQ"}
    sccm = inv.hosts["SCCM01"]
    assert sccm.endpoint is not None and sccm.endpoint.username == "LAB\\other"
    assert sccm.endpoint.password is not None and sccm.endpoint.password.reveal() == "Other-Secret-2"
    assert sccm.roles == ("configmgr_site_server",)  # the host's own list wins over the group's


def test_child_group_vars_beat_parent_and_ranges_expand() -> None:
    inv = load_inventory(DATA / "lab.yaml", env={})
    c2 = inv.hosts["client02"]
    assert c2.groups == ("branch", "lab")
    assert c2.site == "BR1" and c2.vars["site"] == "BR1"  # child group `branch` over parent `lab`
    assert c2.roles == ("wsus_client",)
    assert c2.endpoint is not None and c2.endpoint.effective_port == 5985  # http default
    assert inv.groups["lab"].children == ("branch",)
    assert inv.group_members("lab") == ["WSUS01", "SCCM01", "client01", "client02", "client03"]


def test_non_winrm_host_is_skipped_with_reason() -> None:
    inv = load_inventory(DATA / "lab.yaml", env={})
    old = inv.hosts["OLD01"]
    assert old.endpoint is None and old.skipped
    assert old.skipped_reason == "ansible_connection is ssh, not winrm"
    assert old.roles == ()  # nothing declared: discovery decides


def test_digest_and_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, "kbfix_inventory: 1\nhosts:\n  A: {address: 127.0.0.1}\n")
    first = load_inventory(path, env={"KBFIX_PASSWORD": "x"})
    assert first.sources == (path,) and len(first.digest) == 64
    path.write_text("kbfix_inventory: 1\nhosts:\n  A: {address: 127.0.0.2}\n", encoding="utf-8")
    assert load_inventory(path, env={"KBFIX_PASSWORD": "x"}).digest != first.digest


def test_group_roles_and_role_map(tmp_path: Path) -> None:
    path = _write(tmp_path, """
kbfix_inventory: 1
groups:
  sccm_servers: {hosts: [S1]}
  patching: {roles: [wsus_server], hosts: [W1]}
hosts:
  S1: {}
  W1: {vars: {kbfix_roles: 'wsus_server, wsus_client'}}
""")
    inv = load_inventory(path, env={"KBFIX_PASSWORD": "x"})
    assert inv.hosts["S1"].roles == ("configmgr_site_server",)  # from the group name
    assert inv.hosts["W1"].roles == ("wsus_server", "wsus_client")  # the variable wins


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ("kbfix_inventory: 1\nhosts:\n  A: {adress: x}\n", 3, "hosts.A.adress", ["unknown key 'adress'", "did you mean 'address'"]),
        ("kbfix_inventory: 1\ndefaults:\n  transprot: ntlm\n", 3, "defaults.transprot", ["did you mean 'transport'"]),
        ("kbfix_inventory: 1\ndefaults:\n  timeouts:\n    opertion: 5\n", 4, "defaults.timeouts.opertion", ["did you mean 'operation'"]),
        ("kbfix_inventory: 1\nhost:\n  A: {}\n", 2, "host", ["did you mean 'hosts'"]),
        ("kbfix_inventory: 1\nhosts:\n  A:\n    port: 70000\n", 4, "hosts.A.port", ["65535"]),
        ("kbfix_inventory: 1\nhosts:\n  A:\n    port: http\n", 4, "hosts.A.port", ["integer"]),
        ("kbfix_inventory: 1\nhosts:\n  A: {scheme: ftp}\n", 3, "hosts.A.scheme", ["'https' or 'http'"]),
        ("kbfix_inventory: 1\nhosts:\n  A: {roles: [wsus_sever]}\n", 3, "hosts.A.roles.0", ["did you mean 'wsus_server'"]),
        ("kbfix_inventory: 1\ngroups:\n  g:\n    children: [missing]\n  mising: {}\n", 4, "groups.g.children.0",
         ["'missing' is not defined", "did you mean 'mising'"]),
        ("kbfix_inventory: 1\nhosts:\n  A: {}\n  A: {}\n", 4, None, ["'A' appears twice"]),
        ("kbfix_inventory: 1\nhosts:\n  'w[1:3]': {}\n  w2: {}\n", 4, "hosts.w2", ["'w2' is defined twice"]),
        ("kbfix_inventory: 1\nhosts:\n  'w[3:1:0]': {}\n", 3, "hosts.w[3:1:0]", ["step"]),
        ("kbfix_inventory: 1\nhosts:\n  A: {address: [1]}\n", 3, "hosts.A.address", ["string"]),
        ("kbfix_inventory: 1\nhosts: [A]\n", 2, "hosts", ["dictionary"]),
        ("kbfix_inventory: 1\nhosts:\n  A: {address: x\n", 4, None, ["YAML syntax error"]),
        ("kbfix_inventory: 2\n", 1, "kbfix_inventory", ["1"]),
        ("kbfix_inventory: 1\ndefaults:\n  timeouts: {operation: 60, read: 30}\n", 3, "defaults.timeouts.read", ["longer than"]),
    ],
)
def test_bad_input_names_file_line_field(tmp_path: Path, text: str, line: int, field: str | None, words: list[str]) -> None:
    err = _error(tmp_path, text)
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    for word in words:
        assert word in err.message, str(err)
    assert str(err).startswith(f"{err.file}:{line}: ")


def test_cycle_in_children_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, "kbfix_inventory: 1\ngroups:\n  a: {children: [b]}\n  b: {children: [a]}\n")
    assert "loop" in err.message and err.line == 4


def test_missing_file_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(tmp_path / "nope.yml")
    assert "no such" in err.value.message


def test_directory_source_merges_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "01-hosts").write_text("[wsus]\nw1 ansible_connection=winrm\n", encoding="utf-8")
    (tmp_path / "02-parents").write_text("[windows:children]\nwsus\n[windows:vars]\nx=1\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# not an inventory\n", encoding="utf-8")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "windows.yml").write_text("y: 2\n", encoding="utf-8")
    inv = load_inventory(tmp_path, env={}, require_credentials=False)
    assert inv.hosts["w1"].groups == ("windows", "wsus")
    assert dict(inv.hosts["w1"].vars) == {"ansible_connection": "winrm", "x": 1, "y": 2}


def test_group_host_must_be_defined(tmp_path: Path) -> None:
    err = _error(tmp_path, "kbfix_inventory: 1\ngroups:\n  lab:\n    hosts: [WSUS1]\nhosts:\n  WSUS01: {}\n")
    assert (err.line, err.field) == (4, "groups.lab.hosts.0")
    assert "did you mean 'WSUS01'" in err.message
