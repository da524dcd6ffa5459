"""ansible.cfg: found in Ansible's order, its inventory/vault settings used, and reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inventory import InventoryError
from inventory.ansible_cfg import find_config, load_config
from kbfix.cli import app
from winlab import fixtures as fixtures_mod
from winlab.lab import Lab

DATA = Path(__file__).parent / "data" / "inventory" / "vault"


def _cfg(directory: Path, text: str, name: str = "ansible.cfg") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_search_order(tmp_path: Path) -> None:
    cwd, home, other = tmp_path / "cwd", tmp_path / "home", tmp_path / "other"
    for d in (cwd, home, other):
        d.mkdir()
    assert find_config({}, cwd, home)[0] in (None, Path("/etc/ansible/ansible.cfg"))
    home_cfg = _cfg(home, "[defaults]\n", ".ansible.cfg")
    assert find_config({}, cwd, home)[0] == home_cfg
    cwd_cfg = _cfg(cwd, "[defaults]\n")
    assert find_config({}, cwd, home)[0] == cwd_cfg
    env_cfg = _cfg(other, "[defaults]\n", "custom.cfg")
    assert find_config({"ANSIBLE_CONFIG": str(env_cfg)}, cwd, home)[0] == env_cfg
    dir_cfg = _cfg(other, "[defaults]\n")  # ANSIBLE_CONFIG naming a directory means <dir>/ansible.cfg
    assert find_config({"ANSIBLE_CONFIG": str(other)}, cwd, home)[0] == dir_cfg
    # an ANSIBLE_CONFIG that does not exist falls through to the next place, as in Ansible
    assert find_config({"ANSIBLE_CONFIG": str(other / "nope.cfg")}, cwd, home)[0] == cwd_cfg


def test_world_writable_cwd_is_skipped_with_a_warning(tmp_path: Path) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    home.mkdir()
    _cfg(cwd, "[defaults]\n")
    cwd.chmod(0o777)
    try:
        path, warnings = find_config({}, cwd, home)
    finally:
        cwd.chmod(0o755)
    assert path != cwd / "ansible.cfg"
    assert warnings and "world-writable" in warnings[0]


def test_settings_resolve_relative_to_the_file_and_env_wins(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "proj", "[defaults]\ninventory = inv/hosts.yml, /abs/other.ini ; comment\n"
                                  "vault_password_file = ~/.vault_pass\nvault_identity_list = dev@dev.txt, prod@prompt\n")
    home = tmp_path / "home"
    home.mkdir()
    config = load_config({"ANSIBLE_CONFIG": str(cfg), "HOME": str(home)}, tmp_path, home)
    assert config.path == cfg
    assert config.inventory == (cfg.parent / "inv" / "hosts.yml", Path("/abs/other.ini"))
    assert config.vault_password_file == Path.home() / ".vault_pass"
    assert config.vault_identity_list == ("dev@dev.txt", "prod@prompt")
    env = {"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_INVENTORY": "a.ini,b.ini", "ANSIBLE_VAULT_PASSWORD_FILE": "p.txt"}
    config = load_config(env, tmp_path, home)
    assert config.inventory == (tmp_path / "a.ini", tmp_path / "b.ini")
    assert config.vault_password_file == tmp_path / "p.txt"
    assert config.origins["inventory"] == "environment ANSIBLE_INVENTORY"


def test_unparsable_cfg_names_the_file(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "inventory = hosts\n")  # no section header
    with pytest.raises(InventoryError) as err:
        load_config({"ANSIBLE_CONFIG": str(cfg)}, tmp_path, tmp_path)
    assert err.value.file == cfg


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with ansible.cfg naming the inventory and the vault password file (relative)."""
    proj = tmp_path / "proj"
    shutil.copytree(DATA / "layouts" / "inline" / "group_vars", proj / "inventory" / "group_vars")
    shutil.copy(DATA / "vault-pass.txt", proj / ".vault-pass")
    _cfg(proj, "[defaults]\ninventory = inventory/hosts.yml\nvault_password_file = .vault-pass\n")
    monkeypatch.chdir(proj)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST",
                "KBFIX_INVENTORY"):
        monkeypatch.delenv(var, raising=False)
    return proj


def _hosts(proj: Path, port: int) -> None:
    (proj / "inventory" / "hosts.yml").write_text(
        f"windows:\n  hosts:\n    WSUS-SP1: {{ansible_host: 127.0.0.1, ansible_port: {port}}}\n"
        "  vars: {ansible_connection: winrm, ansible_winrm_scheme: http, ansible_user: 'LAB\\kbfix'}\n",
        encoding="utf-8")


def test_inventory_check_says_which_cfg_it_used(project: Path) -> None:
    _hosts(project, 5985)
    result = CliRunner().invoke(app, ["inventory", "check"])
    assert result.exit_code == 0, result.output
    assert f"ansible.cfg: {project / 'ansible.cfg'}" in result.output
    assert "inventory from:" in result.output and "[defaults] inventory" in result.output
    assert "vault secrets: default@" in result.output
    assert "password: *** (inventory ansible_password)" in result.output
    assert "Secret-1" not in result.output


def test_ping_with_only_ansible_cfg(project: Path) -> None:
    with Lab(fixtures_mod.demo_site()[:1]) as lab:
        _hosts(project, lab.endpoints["WSUS-SP1"].port)
        result = CliRunner().invoke(app, ["--state", str(project / "state"), "ping"])
    assert result.exit_code == 0, result.output
    assert "WSUS-SP1\tok" in result.output


def test_no_inventory_anywhere_says_where_to_set_it(project: Path) -> None:
    (project / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["inventory", "check"])
    assert result.exit_code == 2
    assert "ansible.cfg" in result.output
