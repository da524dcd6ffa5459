"""Credentials: every source works, and no password ever shows in output, errors or reprs."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from typer.testing import CliRunner

from inventory import InventoryError, load_inventory
from inventory.render import check_lines, graph, inventory_document
from kbfix.cli import app

PASSWORD = "Tr0ub4dor&3-kbfix-test"
OTHER = "c0rrect-h0rse-kbfix-test"

INI = f"""
[wsus]
wsus01 ansible_host=127.0.0.1 ansible_password='{PASSWORD}' db_password={OTHER}
wsus02 ansible_host=127.0.0.2

[wsus:vars]
ansible_connection=winrm
ansible_user=CORP\\svc
ansible_password={OTHER}
"""


def _ini(tmp_path: Path, text: str = INI) -> Path:
    path = tmp_path / "hosts"
    path.write_text(text, encoding="utf-8")
    return path


def _assert_clean(text: str) -> None:
    assert PASSWORD not in text and OTHER not in text


def test_password_never_printed(tmp_path: Path) -> None:
    path = _ini(tmp_path)
    inv = load_inventory(path, env={})
    w1 = inv.hosts["wsus01"]
    assert w1.endpoint is not None and w1.endpoint.password is not None
    assert w1.endpoint.password.reveal() == PASSWORD
    assert inv.hosts["wsus02"].endpoint.password.reveal() == OTHER  # type: ignore[union-attr]
    for text in (repr(inv), str(inv), repr(w1), str(w1), repr(w1.vars), repr(w1.endpoint), str(dict(w1.vars)),
                 json.dumps(inventory_document(inv, list(inv.hosts.values()))), "\n".join(graph(inv)),
                 "\n".join(line for h in inv.hosts.values() for line in check_lines(h))):
        _assert_clean(text)
    with pytest.raises(TypeError):
        pickle.dumps(w1)


def test_cli_outputs_are_clean(tmp_path: Path) -> None:
    path = _ini(tmp_path)
    runner = CliRunner()
    for args in (["inventory", "list", "--format", "json"], ["inventory", "list"], ["inventory", "check"],
                 ["inventory", "graph"]):
        result = runner.invoke(app, [*args, "-i", str(path)])
        assert result.exit_code == 0, result.output
        _assert_clean(result.output)
    assert '"password": "***"' in runner.invoke(app, ["inventory", "list", "-i", str(path), "--format", "json"]).output


@pytest.mark.parametrize(
    "text",
    [
        f"kbfix_inventory: 1\ndefaults:\n  password: {{x: '{PASSWORD}'}}\nhosts:\n  A: {{}}\n",
        f"kbfix_inventory: 1\ndefaults:\n  password: '{PASSWORD}\nhosts:\n  A: {{}}\n",
        f"kbfix_inventory: 1\ndefaults:\n  password: '{PASSWORD}'\n  pasword: '{PASSWORD}'\n",
        f"kbfix_inventory: 1\nhosts:\n  A: {{password: '{PASSWORD}', port: '{PASSWORD}'}}\n",
    ],
)
def test_errors_do_not_echo_passwords(tmp_path: Path, text: str) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InventoryError) as err:
        load_inventory(path, env={})
    _assert_clean(str(err.value))
    _assert_clean(repr(err.value))
    result = CliRunner().invoke(app, ["inventory", "check", "-i", str(path)])
    assert result.exit_code == 2
    _assert_clean(result.output)


def test_ini_errors_do_not_echo_passwords(tmp_path: Path) -> None:
    for text in (f"[g]\nh ansible_password={PASSWORD} stray\n", f"[g]\nh ansible_password='{PASSWORD}\n",
                 f"[g]\nh ansible_connection=winrm ansible_port={PASSWORD}\n"):
        with pytest.raises(InventoryError) as err:
            load_inventory(_ini(tmp_path, text), env={})
        _assert_clean(str(err.value))


KBFIX = """
kbfix_inventory: 1
defaults: {username: 'LAB\\kbfix'%s}
hosts:
  A: {address: 127.0.0.1}
  B: {address: 127.0.0.2}
"""


def _kbfix(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "inv.yml"
    path.write_text(KBFIX % extra, encoding="utf-8")
    return path


def test_password_env(tmp_path: Path) -> None:
    inv = load_inventory(_kbfix(tmp_path, ", password_env: MY_PW"), env={"MY_PW": PASSWORD})
    assert inv.hosts["A"].endpoint.password.reveal() == PASSWORD  # type: ignore[union-attr]
    assert inv.hosts["A"].password_source == "environment MY_PW"
    with pytest.raises(InventoryError, match="MY_PW"):
        load_inventory(_kbfix(tmp_path, ", password_env: MY_PW"), env={})


def test_kbfix_password_env_default(tmp_path: Path) -> None:
    inv = load_inventory(_kbfix(tmp_path), env={"KBFIX_PASSWORD": PASSWORD})
    assert inv.hosts["B"].endpoint.password.reveal() == PASSWORD  # type: ignore[union-attr]


def test_prompt_asked_once_per_user(tmp_path: Path) -> None:
    asked: list[str] = []

    def prompt(message: str) -> str:
        asked.append(message)
        return PASSWORD

    inv = load_inventory(_kbfix(tmp_path), env={}, prompt=prompt)
    assert len(asked) == 1 and "LAB\\kbfix" in asked[0]
    assert inv.hosts["B"].endpoint.password.reveal() == PASSWORD  # type: ignore[union-attr]
    assert inv.hosts["B"].password_source == "prompt"


def test_no_password_and_no_terminal_is_a_clear_error(tmp_path: Path) -> None:
    # pytest's stdin is not a terminal, so no prompt is possible.
    with pytest.raises(InventoryError) as err:
        load_inventory(_kbfix(tmp_path), env={})
    assert "no password for host 'A'" in err.value.message and "KBFIX_PASSWORD" in err.value.message
    assert err.value.file == tmp_path / "inv.yml" and err.value.line == 5
    # list/check do not need one
    inv = load_inventory(_kbfix(tmp_path), env={}, require_credentials=False)
    assert inv.hosts["A"].endpoint.password is None  # type: ignore[union-attr]


def test_kerberos_needs_no_password(tmp_path: Path) -> None:
    inv = load_inventory(_kbfix(tmp_path, ", transport: kerberos"), env={})
    assert inv.hosts["A"].endpoint.password is None  # type: ignore[union-attr]


class _MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[_MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = _MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def test_keyring(tmp_path: Path, memory_keyring: _MemoryKeyring) -> None:
    memory_keyring.set_password("kbfix-lab", "LAB\\kbfix", PASSWORD)
    inv = load_inventory(_kbfix(tmp_path, ", password_keyring: kbfix-lab"), env={"KBFIX_PASSWORD": "not-this"})
    assert inv.hosts["A"].endpoint.password.reveal() == PASSWORD  # type: ignore[union-attr]
    assert inv.hosts["A"].password_source == "keyring kbfix-lab"
    with pytest.raises(InventoryError, match="keyring has no password"):
        load_inventory(_kbfix(tmp_path, ", password_keyring: other-service"), env={})


VAULT_DATA = Path(__file__).parent / "data" / "inventory" / "vault"


@pytest.mark.parametrize("layout", ["inline", "encrypted", "template", "vaultid"])
def test_vault_decrypted_values_never_printed(tmp_path: Path, layout: str) -> None:
    """Vault-decrypted values are Secrets: no output of `inventory list/check/graph/export` shows
    them, nor the vault password; the rendered `{{ vault_win_password }}` is a Secret too."""
    import shutil

    shutil.copytree(VAULT_DATA / "layouts" / layout / "group_vars", tmp_path / "group_vars")
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("windows:\n  hosts:\n    wsus01: {ansible_host: 127.0.0.1}\n"
                     "  vars: {ansible_connection: winrm, ansible_user: 'LAB\\kbfix'}\n", encoding="utf-8")
    vault_args = (["--vault-id", f"prod@{VAULT_DATA / 'prod-pass.txt'}"] if layout == "vaultid"
                  else ["--vault-password-file", str(VAULT_DATA / "vault-pass.txt")])
    secrets = ("Secret-1", "kbfix-test-vault", "prod-Vault-2")
    runner = CliRunner()
    for args in (["inventory", "list", "--format", "json"], ["inventory", "list"], ["inventory", "check"],
                 ["inventory", "graph"], ["inventory", "export"]):
        result = runner.invoke(app, [*args, "-i", str(hosts), *vault_args])
        assert result.exit_code == 0, result.output
        for secret in secrets:
            assert secret not in result.output, args
    result = runner.invoke(app, ["inventory", "check", "-i", str(hosts), "--vault-password-file",
                                 str(VAULT_DATA / "wrong-pass.txt")])
    assert result.exit_code == 2 and "wrong vault password" in result.output
    for secret in secrets:
        assert secret not in result.output
