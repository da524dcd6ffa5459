"""Ansible Vault: the cipher against vectors made by the real ansible-vault, the envelope parser
(property tests), password sources, and inventories with vault content reaching the lab."""

from __future__ import annotations

import binascii
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from inventory import InventoryError, load_inventory
from inventory.vault import (
    VaultFormatError,
    VaultPasswordError,
    decrypt,
    derive_keys,
    is_encrypted,
    parse_envelope,
)
from inventory.vault_secrets import VaultIdentity, build_keyring
from kbfix.cli import app
from remoting.endpoint import Secret
from winlab import fixtures as fixtures_mod
from winlab.lab import Lab

DATA = Path(__file__).parent / "data" / "inventory" / "vault"
LAB_PASSWORD = "Secret-1"  # winlab/fixtures/demo-site.yaml, x-account


class _VaultLoader(yaml.SafeLoader):
    pass


_VaultLoader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def _vectors() -> list[dict[str, str]]:
    with (DATA / "vectors.yaml").open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_VaultLoader)["vectors"]  # noqa: S506 - SafeLoader + one scalar tag


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_decrypts_what_ansible_vault_encrypted(vector: dict[str, str]) -> None:
    password = (DATA / vector["password_file"]).read_bytes().strip()
    envelope = parse_envelope(vector["envelope"])
    assert envelope.vault_id == vector["vault_id"]
    assert envelope.version == ("1.2" if vector["vault_id"] else "1.1")
    assert decrypt(envelope, password).decode("utf-8") == vector["plaintext"]


@pytest.mark.parametrize("vector", _vectors()[:2], ids=lambda v: v["name"])
def test_wrong_password_or_altered_ciphertext_fails_the_hmac(vector: dict[str, str]) -> None:
    envelope = parse_envelope(vector["envelope"])
    with pytest.raises(VaultPasswordError):
        decrypt(envelope, b"not-the-password")
    flipped = bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]
    password = (DATA / vector["password_file"]).read_bytes().strip()
    with pytest.raises(VaultPasswordError):
        decrypt(type(envelope)(envelope.version, envelope.cipher, envelope.vault_id, envelope.salt,
                               envelope.hmac, flipped), password)


def test_encrypted_file_matches_ansible_vault_view() -> None:
    text = (DATA / "layouts" / "encrypted" / "group_vars" / "windows.yml").read_text(encoding="utf-8")
    assert is_encrypted(text)
    plain = decrypt(parse_envelope(text), b"kbfix-test-vault").decode("utf-8")
    assert plain == (DATA / "layouts" / "encrypted.plain.txt").read_text(encoding="utf-8")


# ------------------------------------------------------------------- envelope parser properties


def _encrypt(plain: bytes, password: bytes, salt: bytes, vault_id: str | None) -> str:
    """The writer side (ansible-core VaultAES256.encrypt), to round-trip the parser."""
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.hmac import HMAC

    key, mac_key, iv = derive_keys(password, salt)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    ct = enc.update(padded) + enc.finalize()
    mac = HMAC(mac_key, hashes.SHA256())
    mac.update(ct)
    body = binascii.hexlify(binascii.hexlify(salt) + b"\n" + binascii.hexlify(mac.finalize()) + b"\n"
                            + binascii.hexlify(ct)).decode()
    header = f"$ANSIBLE_VAULT;1.2;AES256;{vault_id}" if vault_id else "$ANSIBLE_VAULT;1.1;AES256"
    return header + "\n" + "\n".join(body[i : i + 80] for i in range(0, len(body), 80)) + "\n"


_labels = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=";@"), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None)
@given(plain=st.binary(max_size=200), salt=st.binary(min_size=1, max_size=32),
       vault_id=st.none() | _labels, indent=st.sampled_from(["", "  ", "\t"]))
def test_envelope_round_trip(plain: bytes, salt: bytes, vault_id: str | None, indent: str) -> None:
    text = _encrypt(plain, b"pw", salt, vault_id)
    text = "\n".join(indent + line for line in text.splitlines())  # as in a `!vault |` block
    envelope = parse_envelope(text)
    assert envelope.vault_id == vault_id and envelope.salt == salt
    assert decrypt(envelope, b"pw") == plain


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_envelope_parser_never_crashes(text: str) -> None:
    """Any text: an envelope, or VaultFormatError (never IndexError, binascii.Error, …)."""
    try:
        parse_envelope(text)
    except VaultFormatError:
        pass


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400), junk=st.text(max_size=8))
def test_damaged_envelopes_are_format_errors(cut: int, junk: str) -> None:
    good = _vectors()[0]["envelope"]
    damaged = good[:cut] + junk + good[cut + len(junk) :]
    try:
        envelope = parse_envelope(damaged)
    except VaultFormatError:
        return
    try:
        decrypt(envelope, b"kbfix-test-vault")
    except (VaultPasswordError, VaultFormatError):
        pass


@pytest.mark.parametrize("text", ["$ANSIBLE_VAULT;1.0;AES256\n00", "$ANSIBLE_VAULT;1.1;AES128\n00",
                                  "$ANSIBLE_VAULT;1.2;AES256\n00", "plain text", "$ANSIBLE_VAULT;1.1;AES256\nzz"])
def test_envelope_errors_say_what_is_wrong(text: str) -> None:
    with pytest.raises(VaultFormatError):
        parse_envelope(text)


# ----------------------------------------------------------------------------- password sources


def _layout(tmp_path: Path, name: str, port: int = 5985, extra_vars: str = "") -> Path:
    root = tmp_path / name
    shutil.copytree(DATA / "layouts" / name / "group_vars", root / "group_vars")
    (root / "hosts.yml").write_text(
        "windows:\n  hosts:\n    WSUS-SP1:\n      ansible_host: 127.0.0.1\n"
        f"      ansible_port: {port}\n"
        "  vars:\n    ansible_connection: winrm\n    ansible_winrm_scheme: http\n"
        "    ansible_winrm_transport: ntlm\n    ansible_user: 'LAB\\kbfix'\n" + extra_vars,
        encoding="utf-8",
    )
    return root / "hosts.yml"


def test_password_from_an_executable_and_a_client_script(tmp_path: Path) -> None:
    script = tmp_path / "vault-pass.sh"
    script.write_text("#!/bin/sh\nprintf 'kbfix-test-vault\\r\\n'\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    inv = load_inventory(_layout(tmp_path, "inline"), env={}, vault=build_keyring(password_files=[script]))
    assert inv.hosts["WSUS-SP1"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]
    client = tmp_path / "keys-client.sh"  # *-client scripts get --vault-id LABEL (ansible-core)
    client.write_text('#!/bin/sh\n[ "$1 $2" = "--vault-id prod" ] || exit 2\necho prod-Vault-2\n', encoding="utf-8")
    client.chmod(client.stat().st_mode | stat.S_IXUSR)
    inv = load_inventory(_layout(tmp_path, "vaultid"), env={}, vault=build_keyring(vault_ids=[f"prod@{client}"]))
    assert inv.hosts["WSUS-SP1"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]
    with pytest.raises(InventoryError, match="knows no vault id 'other'"):
        load_inventory(_layout(tmp_path / "x", "vaultid"), env={}, vault=build_keyring(vault_ids=[f"other@{client}"]))


def test_vault_id_label_is_tried_first_then_the_others(tmp_path: Path) -> None:
    keyring = build_keyring(vault_ids=[f"dev@{DATA / 'wrong-pass.txt'}", f"prod@{DATA / 'prod-pass.txt'}"])
    inv = load_inventory(_layout(tmp_path, "vaultid"), env={}, vault=keyring)
    assert inv.hosts["WSUS-SP1"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]
    # a 1.1 value (no label) is still decrypted by whichever secret fits
    keyring = build_keyring(vault_ids=[f"prod@{DATA / 'prod-pass.txt'}", f"dev@{DATA / 'vault-pass.txt'}"])
    inv = load_inventory(_layout(tmp_path / "b", "inline"), env={}, vault=keyring)
    assert inv.hosts["WSUS-SP1"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]


def test_prompted_vault_password_is_asked_once(tmp_path: Path) -> None:
    asked: list[str] = []

    def prompt(message: str) -> str:
        asked.append(message)
        return "kbfix-test-vault"

    root = _layout(tmp_path, "template")
    inv = load_inventory(root, env={}, vault=build_keyring(ask=True, prompt=prompt))
    assert inv.hosts["WSUS-SP1"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]
    assert asked == ["Vault password: "]


def test_no_vault_password_names_the_file_and_the_options(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(_layout(tmp_path, "inline"), env={})
    assert err.value.file is not None and err.value.file.name == "windows.yml" and err.value.line == 1
    assert "--vault-password-file" in str(err.value)


def test_vault_id_needs_a_source() -> None:
    assert VaultIdentity.parse("prod@/x", "--vault-id").label == "prod"
    assert VaultIdentity.parse("/x", "--vault-id").label == "default"
    with pytest.raises(InventoryError):
        VaultIdentity.parse("prod@", "--vault-id")


# ------------------------------------------------------------------------------- through the lab


@pytest.fixture(scope="module")
def lab() -> object:
    with Lab(fixtures_mod.demo_site()[:1]) as running:
        yield running


def _lab_port(lab: Lab) -> int:
    return lab.endpoints["WSUS-SP1"].port


@pytest.mark.parametrize("layout,args", [
    ("inline", ["--vault-password-file", str(DATA / "vault-pass.txt")]),
    ("encrypted", ["--vault-password-file", str(DATA / "vault-pass.txt")]),
    ("template", ["--vault-id", f"default@{DATA / 'vault-pass.txt'}"]),
    ("vaultid", ["--vault-id", f"prod@{DATA / 'prod-pass.txt'}"]),
])
def test_vaulted_inventories_reach_the_lab(tmp_path: Path, lab: Lab, layout: str, args: list[str]) -> None:
    """`!vault` password, wholly encrypted group_vars, `{{ vault_win_password }}`, a 1.2 vault id."""
    hosts = _layout(tmp_path, layout, _lab_port(lab))
    result = CliRunner().invoke(app, ["-i", str(hosts), *args, "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 0, result.output
    assert "WSUS-SP1\tok" in result.output
    assert LAB_PASSWORD not in result.output


@pytest.mark.parametrize("layout,args,extra,expect", [
    ("inline", ["--vault-password-file", str(DATA / "wrong-pass.txt")], "", "wrong vault password"),
    ("encrypted", ["--vault-password-file", str(DATA / "wrong-pass.txt")], "", "wrong vault password"),
    ("inline", [], "", "no vault password was given"),
    ("template", ["--vault-password-file", str(DATA / "vault-pass.txt")],
     "    ansible_user: '{{ win_domain }}\\kbfix'\n", "undefined variable 'win_domain'"),
    ("template", ["--vault-password-file", str(DATA / "vault-pass.txt")],
     "    ansible_user: \"{{ '{{' }} x }}\"\n", "still holds"),
])
def test_bad_vault_or_template_exits_2_before_any_request(
    tmp_path: Path, lab: Lab, layout: str, args: list[str], extra: str, expect: str
) -> None:
    hosts = _layout(tmp_path, layout, _lab_port(lab))
    if extra:  # replace the user line with a templated one
        text = hosts.read_text(encoding="utf-8").replace("    ansible_user: 'LAB\\kbfix'\n", extra)
        hosts.write_text(text, encoding="utf-8")
    before = lab.records("WSUS-SP1").total_requests
    result = CliRunner().invoke(app, ["-i", str(hosts), *args, "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 2, result.output
    assert expect in result.output
    assert str(hosts.parent) in result.output  # names the file
    assert lab.records("WSUS-SP1").total_requests == before  # nothing was sent
    assert LAB_PASSWORD not in result.output


def test_undefined_variable_names_file_line_and_variable(tmp_path: Path) -> None:
    hosts = _layout(tmp_path, "template")
    (hosts.parent / "group_vars" / "windows" / "vars.yml").write_text(
        "# the vault variable is misspelt\nansible_password: \"{{ vault_win_pasword }}\"\n", encoding="utf-8")
    with pytest.raises(InventoryError) as err:
        load_inventory(hosts, env={}, vault=build_keyring(password_files=[DATA / "vault-pass.txt"]))
    assert err.value.file is not None and err.value.file.name == "vars.yml" and err.value.line == 2
    assert err.value.field == "ansible_password"
    assert "undefined variable 'vault_win_pasword'" in str(err.value)
    assert "did you mean 'vault_win_password'" in str(err.value)


def test_ansible_vault_password_file_env_is_honoured(tmp_path: Path, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(DATA / "vault-pass.txt"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    hosts = _layout(tmp_path, "inline", _lab_port(lab))
    result = CliRunner().invoke(app, ["-i", str(hosts), "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 0, result.output
    assert os.environ["ANSIBLE_VAULT_PASSWORD_FILE"].endswith("vault-pass.txt")


def test_kbfix_yaml_password_may_be_a_vault_value(tmp_path: Path) -> None:
    inline = (DATA / "layouts" / "inline" / "group_vars" / "windows.yml").read_text(encoding="utf-8")
    vaulted = inline.replace("ansible_password:", "  password:").replace("\n          ", "\n            ")
    path = tmp_path / "site.yml"
    path.write_text("kbfix_inventory: 1\ndefaults:\n  username: 'LAB\\kbfix'\n" + vaulted
                    + "hosts:\n  A: {address: 127.0.0.1}\n", encoding="utf-8")
    inv = load_inventory(path, env={}, vault=build_keyring(password_files=[DATA / "vault-pass.txt"]))
    assert inv.hosts["A"].endpoint.password == Secret(LAB_PASSWORD)  # type: ignore[union-attr]


def test_connection_settings_from_an_encrypted_file_are_usable(tmp_path: Path) -> None:
    """Every string of a wholly encrypted vars file is a Secret; connection settings among them
    (a transport list, a user name, a port) still configure the endpoint."""
    hosts = _layout(tmp_path, "inline")
    plain = b"ansible_winrm_transport: [kerberos, ntlm]\nansible_user: svc@CORP.EXAMPLE\nansible_port: 5986\n"
    (hosts.parent / "host_vars").mkdir()
    (hosts.parent / "host_vars" / "WSUS-SP1.yml").write_text(
        _encrypt(plain, b"kbfix-test-vault", os.urandom(32), None), encoding="utf-8")
    host = load_inventory(hosts, env={}, vault=build_keyring(password_files=[DATA / "vault-pass.txt"])).hosts["WSUS-SP1"]
    assert host.endpoint is not None
    assert (host.endpoint.transport, host.endpoint.username, host.endpoint.port) == ("kerberos", "svc@CORP.EXAMPLE", 5986)
    assert host.vars["ansible_user"] == Secret("svc@CORP.EXAMPLE")
    assert isinstance(host.vars["ansible_winrm_transport"][0], Secret)


def test_vault_options_may_follow_the_command(tmp_path: Path) -> None:
    """--vault-password-file typed after the command is the global option: a wrong one fails the
    decryption (exit 2, the vault named), the right one decrypts (the run goes on to the host)."""
    secret = _encrypt(b"pw", b"kbfix-test-vault", os.urandom(32), None)
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    H1:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n"
                   "      ansible_connection: winrm\n      ansible_user: u\n      ansible_password: !vault |\n"
                   + "".join(f"        {line}\n" for line in secret.splitlines()), encoding="utf-8")
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not-it\n", encoding="utf-8")

    def ping(pass_file: Path) -> object:
        return CliRunner().invoke(app, ["--state", str(tmp_path / "state"), "ping", "-i", str(inv),
                                        "--vault-password-file", str(pass_file), "--host-timeout", "5"],
                                  env={"KBFIX_INVENTORY": "", "ANSIBLE_VAULT_PASSWORD_FILE": ""})

    bad = ping(wrong)
    assert bad.exit_code == 2 and "vault" in bad.output.lower(), bad.output  # type: ignore[attr-defined]
    good = ping(DATA / "vault-pass.txt")
    assert good.exit_code != 2, good.output  # type: ignore[attr-defined]

