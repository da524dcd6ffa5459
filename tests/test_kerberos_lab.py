"""Kerberos end to end: a real MIT KDC on loopback, the lab accepting Kerberos with a keytab, kbfix
authenticating with pyspnego (TGT from the inventory password, or from a ccache), sealed over
HTTP and over HTTPS, and each Kerberos failure in its own words, before the host sees a request.

Needs Debian's krb5-kdc, krb5-admin-server (kadmin.local), krb5-user (kinit) and faketime, and
the `kerberos` extra; `.ci/run` installs them. Without them the tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kbfix.cli import app
from remoting import kerberos
from remoting.endpoint import Endpoint, Secret
from remoting.errors import ConfigurationError
from winlab import auth as lab_auth
from winlab import fixtures as fixtures_mod
from winlab.kdc import LabKdc, find_tool, missing_tools
from winlab.kerberos_lab import kdc_for, write_kerberos_inventory
from winlab.lab import Lab

_missing = missing_tools(faketime=True) + ([] if kerberos.kerberos_available() else ["kbfix[kerberos] (gssapi, krb5)"])
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"Kerberos lab needs {', '.join(_missing)}")

PASSWORD = "Secret-1"  # winlab/fixtures/demo-site.yaml x-account, also the realm's kbfix@LAB.TEST
HOSTS = 2


@pytest.fixture(scope="module")
def kdc() -> Iterator[LabKdc]:
    with kdc_for(fixtures_mod.demo_site()[:HOSTS]) as realm:
        yield realm


@pytest.fixture(scope="module", params=["http", "https"])
def lab(request: pytest.FixtureRequest, kdc: LabKdc) -> Iterator[Lab]:
    with Lab(fixtures_mod.demo_site()[:HOSTS], https=request.param == "https") as running:
        yield running


@pytest.fixture(scope="module")
def http_lab(kdc: LabKdc) -> Iterator[Lab]:
    """For failures on the Kerberos side, which are the same whatever the scheme."""
    with Lab(fixtures_mod.demo_site()[:HOSTS]) as running:
        yield running


def _inventory(lab: Lab, kdc: LabKdc, path: Path, **changes: object) -> Path:
    write_kerberos_inventory(lab, kdc, path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key.startswith("host."):
            for entry in doc["hosts"].values():
                entry[key[5:]] = value
        elif value is None:
            doc["defaults"].pop(key, None)
        else:
            doc["defaults"][key] = value
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _requests(lab: Lab) -> int:
    return sum(lab.records(h.name).total_requests for h in lab.hosts)


def test_full_check_over_kerberos(tmp_path: Path, lab: Lab, kdc: LabKdc, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kbfix -vv check`: Kerberos with an in-memory TGT; over http every WS-Man body is sealed
    (MS-WSMV 2.2.9.1), over https TLS carries them. The password shows nowhere."""
    unsealed = {"count": 0}
    original = lab_auth.ConnectionAuth.unwrap

    def counting_unwrap(self: lab_auth.ConnectionAuth, body: bytes) -> bytes:
        assert self.kerberos, "a sealed body on a non-Kerberos context"
        unsealed["count"] += 1
        return original(self, body)

    monkeypatch.setattr(lab_auth.ConnectionAuth, "unwrap", counting_unwrap)
    path = _inventory(lab, kdc, tmp_path / "krb.yaml")
    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["-vv", "-i", str(path), "--state", str(state), "check"])
    assert result.exit_code in (0, 3), result.output  # 3: some hosts non-compliant, as the fixtures intend
    assert "compliant" in result.output
    assert "FAILED" not in result.output and "unreachable" not in result.output
    if lab.https:
        assert unsealed["count"] == 0
    else:
        assert unsealed["count"] >= 5 * HOSTS  # Create, Command, Send, Receive, Delete per host, all sealed
    assert PASSWORD not in result.output
    for p in (p for p in state.rglob("*") if p.is_file()):
        assert PASSWORD.encode() not in p.read_bytes()


def test_ticket_from_the_credential_cache(tmp_path: Path, lab: Lab, kdc: LabKdc,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No password in the inventory: the TGT comes from the user's ccache (after kinit)."""
    ccache = tmp_path / "ccache"
    done = subprocess.run([find_tool("kinit") or "kinit", "-c", f"FILE:{ccache}", kdc.principal("kbfix")],
                          input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=30, check=False,
                          env={**os.environ, **kdc.env})
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    path = _inventory(lab, kdc, tmp_path / "krb.yaml", password=None)
    check = CliRunner().invoke(app, ["inventory", "check", "-i", str(path)])
    assert "ticket: from the credential cache" in check.output, check.output
    result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"], env={"KBFIX_PASSWORD": None})
    assert result.exit_code == 0, result.output
    assert result.output.count("\tok\t") == HOSTS


@pytest.mark.parametrize("change,words", [
    ({"password": "not-the-password"}, "wrong password"),
    ({"host.kerberos_hostname_override": "nosuchhost.lab.test"}, "unknown SPN"),
    ({"host.kerberos_hostname_override": "wsus.unmapped.example"}, "no realm is mapped"),
])
def test_kerberos_failures_in_their_own_words(tmp_path: Path, http_lab: Lab, kdc: LabKdc,
                                              change: dict[str, object], words: str) -> None:
    lab = http_lab
    before = _requests(lab)
    path = _inventory(lab, kdc, tmp_path / "krb.yaml", **change)
    result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 4, result.output
    assert result.output.count(words) == HOSTS, result.output
    assert _requests(lab) == before  # Kerberos failed at the KDC: the host never saw a request
    assert PASSWORD not in result.output and "not-the-password" not in result.output


def test_no_password_and_no_ticket_says_kinit(tmp_path: Path, http_lab: Lab, kdc: LabKdc,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-ccache'}")
    path = _inventory(http_lab, kdc, tmp_path / "krb.yaml", password=None)
    result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"],
                                env={"KBFIX_PASSWORD": None})
    assert result.exit_code == 4, result.output
    assert "run kinit" in result.output, result.output


def test_delegation_and_the_spn_service_class_are_used(tmp_path: Path, http_lab: Lab, kdc: LabKdc) -> None:
    """kerberos_delegation asks to forward the TGT and still connects; `service` names the SPN's class
    (the realm has only HTTP/..., so WSMAN/... is an unknown SPN, named as such)."""
    path = _inventory(http_lab, kdc, tmp_path / "krb.yaml", kerberos_delegation=True)
    result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 0, result.output
    path = _inventory(http_lab, kdc, tmp_path / "krb2.yaml", service="WSMAN")
    result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 4 and "WSMAN/wsus-sp1.lab.test (unknown SPN)" in result.output, result.output


def test_a_rejected_password_is_not_tried_again(tmp_path: Path, http_lab: Lab, kdc: LabKdc) -> None:
    """One KDC rejection per user and password per run, however many hosts: no account lockout."""
    lab = http_lab
    path = _inventory(lab, kdc, tmp_path / "krb.yaml", password="wrong-but-other")
    log = kdc.log.read_text(encoding="utf-8", errors="replace") if kdc.log.exists() else ""
    result = CliRunner().invoke(app, ["--forks", "1", "-i", str(path), "--state", str(tmp_path / "s"), "ping"])
    assert result.output.count("the KDC rejected the password") == 1, result.output
    assert result.output.count("not trying again") == HOSTS - 1, result.output
    new_log = kdc.log.read_text(encoding="utf-8", errors="replace")[len(log):]
    assert new_log.count("PREAUTH_FAILED") == 1, new_log


def test_clock_skew_has_its_own_message(tmp_path: Path) -> None:
    """The KDC's clock 1 hour ahead (faketime), the client's krb5.conf with kdc_timesync = 0."""
    hosts = fixtures_mod.demo_site()[:1]
    with kdc_for(hosts, skew_s=3600) as skewed, Lab(hosts) as lab:
        path = _inventory(lab, skewed, tmp_path / "krb.yaml")
        result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])
        assert _requests(lab) == 0
    assert result.exit_code == 4, result.output
    assert "clock skew" in result.output


def test_kdc_unreachable(tmp_path: Path) -> None:
    hosts = fixtures_mod.demo_site()[:1]
    realm = kdc_for(hosts)
    with realm, Lab(hosts) as lab:
        path = _inventory(lab, realm, tmp_path / "krb.yaml")
        realm._proc.terminate()  # type: ignore[union-attr]  # the KDC goes away; its config stays
        realm._proc.wait(timeout=5)  # type: ignore[union-attr]
        result = CliRunner().invoke(app, ["-i", str(path), "--state", str(tmp_path / "s"), "ping"])
    assert result.exit_code == 4, result.output
    assert "no KDC could be reached" in result.output


def test_domain_backslash_user_is_refused_before_contact() -> None:
    ep = Endpoint(host="h", address="127.0.0.1", transport="kerberos", username="LAB\\kbfix", password=Secret("x"))
    with pytest.raises(ConfigurationError, match="user@REALM"):
        kerberos.check_kerberos(ep)


def test_missing_extra_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kerberos, "kerberos_available", lambda: False)
    ep = Endpoint(host="h", address="127.0.0.1", transport="kerberos", username="u@R", password=Secret("x"))
    with pytest.raises(ConfigurationError) as err:
        kerberos.check_kerberos(ep)
    assert "pip install 'kbfix[kerberos]'" in str(err.value) and "libkrb5-dev" in str(err.value)


def test_ansible_kerberos_variables_reach_the_endpoint(tmp_path: Path) -> None:
    from inventory import load_inventory

    path = tmp_path / "hosts"
    path.write_text("[win]\nwsus01 ansible_host=10.0.0.5\n[win:vars]\nansible_connection=winrm\n"
                    "ansible_winrm_transport=kerberos\nansible_user=svc@CORP.EXAMPLE\n"
                    "ansible_winrm_kerberos_hostname_override=wsus01.corp.example\n"
                    "ansible_winrm_kerberos_delegation=true\nansible_winrm_service=WSMAN\n", encoding="utf-8")
    ep = load_inventory(path, env={}).hosts["wsus01"].endpoint
    assert ep is not None and ep.transport == "kerberos" and ep.password is None
    assert (ep.kerberos_hostname_override, ep.kerberos_delegation, ep.service) == ("wsus01.corp.example", True, "WSMAN")


def test_lab_up_with_kerberos_serves_a_realm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kbfix lab up --transport kerberos`: its own KDC, an inventory for it, a ping through it."""
    import signal
    import sys
    import time

    inventory, workdir = tmp_path / "inv.yaml", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kbfix.cli import app; app()", "lab", "up", "--hosts", "2",
         "--transport", "kerberos", "--workdir", str(workdir), "--inventory-out", str(inventory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not inventory.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert inventory.exists(), proc.stderr.read() if proc.poll() is not None and proc.stderr else "no inventory"
        doc = yaml.safe_load(inventory.read_text(encoding="utf-8"))
        assert doc["defaults"]["transport"] == "kerberos" and doc["defaults"]["username"].endswith("@LAB.TEST")
        monkeypatch.setenv("KRB5_CONFIG", str(workdir / "kdc" / "krb5.conf"))
        result = CliRunner().invoke(app, ["-i", str(inventory), "--state", str(tmp_path / "s"), "ping"])
        assert result.exit_code == 0, result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "export KRB5_CONFIG=" in out and "(http, kerberos)" in out
