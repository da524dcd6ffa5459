"""The inventory the lab writes loads, and its endpoints really reach the lab over WinRM."""

from __future__ import annotations

from pathlib import Path

import pytest

import remoting.agent_protocol as protocol_mod
import remoting.session as session_mod
import winlab.fixtures as fixtures_mod
import winlab.lab as lab_mod
from inventory import load_inventory


@pytest.mark.parametrize("transport", ["ntlm", "basic"])
def test_lab_inventory_endpoint_reaches_the_lab(tmp_path: Path, transport: str) -> None:
    hosts = fixtures_mod.demo_site()[:2]
    with lab_mod.Lab(hosts) as lab:
        path = lab.write_inventory(tmp_path / "lab.yaml", transport=transport)
        inv = load_inventory(path, env={})
        assert set(inv.hosts) == {h.name for h in hosts}
        name = hosts[0].name
        host = inv.select(name)[0]
        assert host.endpoint is not None and host.endpoint.url == lab.endpoints[name].url
        assert host.endpoint.transport == transport
        assert host.vars["lab"] is True and host.groups == ("lab",)
        with session_mod.AgentSession(host.endpoint, check_mode=True) as session:
            response = session.run([protocol_mod.op("1", "env.expand", text="%SystemRoot%")])
        result = response.by_id()["1"]
        assert result.ok, result.error
        assert "windows" in str(result.data).lower()  # %SystemRoot% expanded by the emulated host


def test_full_lab_run_never_shows_the_password(tmp_path: Path) -> None:
    """`kbfix -vv check` against the lab: the inventory's password appears in no output or stored byte."""
    import typer.testing as typer_testing

    import kbfix.cli as cli

    with lab_mod.Lab(fixtures_mod.demo_site()[:2]) as lab:
        path = lab.write_inventory(tmp_path / "lab.yaml")
        password = load_inventory(path, env={}).hosts[lab.hosts[0].name].endpoint.password.reveal()  # type: ignore[union-attr]
        assert len(password) >= 6
        state = tmp_path / "state"
        result = typer_testing.CliRunner().invoke(cli.app, ["-vv", "-i", str(path), "--state", str(state), "check"])
    assert "compliant" in result.output, result.output  # the run really happened
    assert password not in result.output
    stored = [p for p in state.rglob("*") if p.is_file()]
    assert stored
    for p in stored:
        assert password.encode() not in p.read_bytes(), p
        assert password.encode("utf-16-le") not in p.read_bytes(), p


VAULT_DATA = Path(__file__).parent / "data" / "inventory" / "vault"


@pytest.mark.parametrize("layout", ["inline", "encrypted", "template"])
def test_full_lab_run_with_vault_never_shows_a_secret(tmp_path: Path, layout: str) -> None:
    """`kbfix -vv check` with the password in Ansible Vault (`!vault`, an encrypted group_vars file,
    `{{ vault_win_password }}`): neither the WinRM password nor the vault password shows anywhere."""
    import shutil

    import typer.testing as typer_testing

    import kbfix.cli as cli

    vault_password = (VAULT_DATA / "vault-pass.txt").read_text(encoding="utf-8").strip()
    with lab_mod.Lab(fixtures_mod.demo_site()[:2]) as lab:
        shutil.copytree(VAULT_DATA / "layouts" / layout / "group_vars", tmp_path / "group_vars")
        lines = ["windows:", "  hosts:"]
        for name, ep in lab.endpoints.items():
            lines.append(f"    {name}: {{ansible_host: {ep.address}, ansible_port: {ep.port}}}")
        lines.append("  vars: {ansible_connection: winrm, ansible_winrm_scheme: http, ansible_user: 'LAB\\kbfix'}")
        hosts = tmp_path / "hosts.yml"
        hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
        state = tmp_path / "state"
        result = typer_testing.CliRunner().invoke(cli.app, [
            "-vv", "-i", str(hosts), "--vault-password-file", str(VAULT_DATA / "vault-pass.txt"),
            "--state", str(state), "check"])
    assert "compliant" in result.output, result.output
    stored = [p for p in state.rglob("*") if p.is_file()]
    assert stored
    for secret in ("Secret-1", vault_password):
        assert secret not in result.output
        for p in stored:
            data = p.read_bytes()
            assert secret.encode() not in data, p
            assert secret.encode("utf-16-le") not in data, p
