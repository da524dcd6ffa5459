"""`kbfix doctor` (issue 17) through the lab: for each broken host of the demo site and the
first-contact fixture (down, wrong password, quota, expired certificate, remote UAC, WSUS API
missing) the failing step and its fix; healthy hosts pass; nothing is changed on any host."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.doctor.fixes import fix, names
from kbfix.trace import trace_file_name
from remoting.agent_protocol import AgentRequest, op
from winlab.fixtures import FIXTURES_DIR, demo_site, load_fixtures, load_host_fixture_text
from winlab.host import run_agent_request
from winlab.lab import Lab

FIRST_CONTACT = FIXTURES_DIR / "first-contact.yaml"
BROKEN = {  # host: (failing step, words its fix must contain)
    "WSUS-DOWN": ("connect", ["winrm quickconfig", "netsh advfirewall", "offline export"]),
    "WSUS-LOCKED": ("authenticate", ["password", "LocalAccountTokenFilterPolicy"]),
    "WSUS-QUOTA": ("authenticate", ["MaxShellsPerUser", "winrm set winrm/config/winrs"]),
    "WSUS-EXPIRED": ("tls", ["expired on", "CertificateThumbprint"]),
    "WSUS-UAC": ("elevation", ["LocalAccountTokenFilterPolicy", "KB951016"]),
    "WSUS-NOAPI": ("wsus_api", ["administration console"]),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str, Path]]:
    tmp = tmp_path_factory.mktemp("doctor")
    with Lab(demo_site() + load_fixtures(FIRST_CONTACT), https=True, workdir=tmp / "lab") as lab:
        yield lab, str(lab.write_inventory(tmp / "inv.yaml")), tmp


@pytest.fixture(scope="module")
def report(lab: tuple[Lab, str, Path]) -> dict[str, Any]:
    _lab, inv, tmp = lab
    res = CliRunner().invoke(app, ["-i", inv, "doctor", "--format", "json", "--trace", str(tmp / "trace")])
    assert res.exit_code == 4, res.output  # some host cannot run a check
    doc = json.loads(res.stdout)
    return {h["host"]: h for h in doc["hosts"]}


@pytest.mark.parametrize("host", sorted(BROKEN))
def test_each_broken_host_names_its_failing_step_and_fix(report: dict[str, Any], host: str) -> None:
    step, words = BROKEN[host]
    h = report[host]
    assert h["can_check"] is False
    failing = next(s for s in h["steps"] if s["status"] == "fail")
    assert failing["name"] == step, failing
    for w in words:
        assert w in failing["fix"], (host, w, failing["fix"])


def test_healthy_hosts_can_run_a_check(report: dict[str, Any]) -> None:
    for host in ("WSUS-SP1", "WSUS-RTM", "CM07-SITE", "WSUS-CN", "OFFICE-CL01"):
        h = report[host]
        assert h["can_check"], (host, [s for s in h["steps"] if s["status"] == "fail"])
        steps = {s["name"]: s for s in h["steps"]}
        assert steps["self_test"]["status"] == "ok"
        assert set(steps["self_test"]["data"]["ms"]) >= {"registry.values", "log.scan", "host.environment"}
        assert steps["winrm_config"]["data"]["MaxEnvelopeSizekb"] == 500
    cm = {s["name"]: s for s in report["CM07-SITE"]["steps"]}
    assert cm["cm_logs"]["status"] == "ok" and "Logs" in cm["cm_logs"]["detail"]
    wsus = {s["name"]: s for s in report["WSUS-SP1"]["steps"]}
    assert wsus["wsus_api"]["status"] == "ok" and cm["wsus_api"]["status"] == "skip"
    cn = {s["name"]: s for s in report["WSUS-CN"]["steps"]}
    assert cn["locale"]["data"] == {"culture": "zh-CN", "os_language": "zh-CN", "ansi_codepage": 936, "oem_codepage": 936}


def test_quota_host_still_reports_its_quota(report: dict[str, Any]) -> None:
    steps = {s["name"]: s for s in report["WSUS-QUOTA"]["steps"]}
    assert steps["winrm_config"]["data"]["MaxShellsPerUser"] == 5


def test_remote_uac_host_is_denied_the_winrm_config(report: dict[str, Any]) -> None:
    steps = {s["name"]: s for s in report["WSUS-UAC"]["steps"]}
    assert steps["winrm_config"]["status"] == "warn" and "access denied" in steps["winrm_config"]["detail"]
    assert steps["elevation"]["data"]["local_account"] is True


def test_doctor_changes_nothing_and_leaves_no_shell(lab: tuple[Lab, str, Path], report: dict[str, Any]) -> None:
    the_lab, _inv, tmp = lab
    assert all(not the_lab.records(n).mutations for n in the_lab.endpoints)
    assert the_lab.open_shells() == 0
    trace = json.loads((tmp / "trace" / trace_file_name("WSUS-SP1")).read_text(encoding="utf-8"))
    ops = {o["name"] for ex in trace["exchanges"] for o in ex["request"]["ops"]}
    assert "host.environment" in ops and not any(o in ops for o in ("file.upload", "installer.run"))


def test_doctor_exits_0_when_every_host_can_run_a_check(lab: tuple[Lab, str, Path]) -> None:
    _lab, inv, _tmp = lab
    res = CliRunner().invoke(app, ["-i", inv, "--limit", "WSUS-SP1,CM07-SITE", "doctor"])
    assert res.exit_code == 0, res.output
    assert "2 of 2 host(s) can run a check" in res.stdout


def test_doctor_table_shows_the_fix(lab: tuple[Lab, str, Path]) -> None:
    _lab, inv, _tmp = lab
    res = CliRunner().invoke(app, ["-i", inv, "--limit", "WSUS-EXPIRED", "doctor"])
    assert res.exit_code == 4
    assert "CANNOT run a check: fix 'tls' first" in res.stdout
    assert "CertificateThumbprint" in res.stdout


def test_doctor_usage_errors() -> None:
    assert CliRunner().invoke(app, ["doctor"]).exit_code == 2
    res = CliRunner().invoke(app, ["-i", "x.yaml", "doctor", "--format", "xml"])
    assert res.exit_code == 2 and "table or json" in res.output


def test_every_fix_the_code_names_exists_and_formats() -> None:
    used = set()
    for path in (Path(__file__).resolve().parents[1] / "kbfix" / "doctor").glob("*.py"):
        used |= set(re.findall(r'\bfix\("([a-z_0-9]+)"', path.read_text(encoding="utf-8")))
    assert used and used <= set(names())
    filler = dict.fromkeys(("host", "address", "port", "scheme", "seconds", "not_after", "names", "ca_file", "reason",
                            "offered", "transport", "enable", "username", "value", "needed", "op", "path"), 1)
    for name in names():
        assert fix(name, **filler)


_ENV_FIXTURE = """
hosts:
  - name: FIPS-LOCAL
    os: {version: 6.0.6001, arch: x64, culture: da-DK}
    accounts: {'.\\\\admin': pw}
    registry:
      'HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\FipsAlgorithmPolicy': {Enabled: 1}
      'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System': {LocalAccountTokenFilterPolicy: 1}
      'HKLM\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v2.0.50727': {Install: 1}
  - name: OLD-LOCAL
    os: {version: 5.2.3790, arch: x86, culture: en-US}
    accounts: {'OLD-LOCAL\\\\admin': pw}
"""


def test_environment_emulation_follows_the_documented_registry_values() -> None:
    hosts = {h.name: h for h in load_host_fixture_text(_ENV_FIXTURE)}
    _res, resp = run_agent_request(hosts["FIPS-LOCAL"], AgentRequest((op("1", "host.environment"),)))
    assert resp is not None
    d = resp.results[0].data
    assert d is not None
    assert d["fips_policy"] is True and d["dotnet"] == ["2.0.50727"]
    assert d["local_account"] is True and d["local_account_token_filter_policy"] == 1 and d["elevated"] is True
    assert (d["ansi_codepage"], d["oem_codepage"]) == (1252, 850)
    _res, resp = run_agent_request(hosts["OLD-LOCAL"], AgentRequest((op("1", "host.environment"),)))
    assert resp is not None and resp.results[0].data is not None
    assert resp.results[0].data["elevated"] is True  # no UAC before Vista / Server 2008
    assert resp.results[0].data["process_64bit"] is False


def _edited_inventory(src: str, dst: Path, **defaults: Any) -> str:
    import yaml

    doc = yaml.safe_load(Path(src).read_text(encoding="utf-8"))
    doc["defaults"].update(defaults)
    dst.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(dst)


def test_tls_chain_failure_names_the_ca_file_in_use(lab: tuple[Lab, str, Path], tmp_path: Path) -> None:
    from winlab.tls import make_pki

    other = make_pki(tmp_path / "other-ca", ["127.0.0.1"], ["x"]).ca_path
    inv = _edited_inventory(lab[1], tmp_path / "inv.yaml", ca_trust_path=str(other))
    res = CliRunner().invoke(app, ["-i", inv, "--limit", "WSUS-SP1", "doctor", "--format", "json"])
    assert res.exit_code == 4
    tls = next(s for s in json.loads(res.stdout)["hosts"][0]["steps"] if s["name"] == "tls")
    assert tls["status"] == "fail" and str(other) in tls["detail"] and "ca_trust_path" in tls["fix"]


def test_offered_auth_schemes_are_compared_with_the_configured_transport(lab: tuple[Lab, str, Path],
                                                                          tmp_path: Path) -> None:
    inv = _edited_inventory(lab[1], tmp_path / "inv.yaml", transport="credssp")
    res = CliRunner().invoke(app, ["-i", inv, "--limit", "WSUS-SP1", "doctor", "--format", "json"])
    assert res.exit_code == 4
    step = next(s for s in json.loads(res.stdout)["hosts"][0]["steps"] if s["name"] == "auth_offered")
    assert step["status"] == "fail"
    assert step["data"]["offered"] == ["Negotiate", "Basic"]  # the lab's 401, as WinRM's default service auth
    assert "Enable-WSManCredSSP" in step["fix"]


def test_tls_name_mismatch_lists_the_names_the_certificate_has(tmp_path: Path) -> None:
    import socket
    import ssl
    import threading

    from kbfix.doctor.network import tls_step
    from remoting.endpoint import Endpoint, Timeouts
    from winlab.tls import make_pki

    pki = make_pki(tmp_path, [], ["wsus07.corp.example"])  # no IP address in the certificate
    ctx = pki.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        ep = Endpoint(host="WSUS07", address="127.0.0.1", port=port, ca_trust_path=str(pki.ca_path),
                      timeouts=Timeouts(connect=2, operation=2, read=3, command=5))
        step = tls_step(ep)
    finally:
        stop.set()
        thread.join(2)
        listener.close()
    assert step.status.value == "fail"
    assert "does not name 127.0.0.1" in step.detail and "wsus07.corp.example" in step.detail
    assert step.fix is not None and "subject alternative name includes 127.0.0.1" in step.fix


def test_a_server_that_accepts_but_never_answers_is_named_as_such(tmp_path: Path) -> None:
    hosts = load_host_fixture_text("hosts:\n  - name: HANG\n    accounts: {'LAB\\\\kbfix': pw}\n    faults: {connect: hang}\n")
    with Lab(hosts, https=True, workdir=tmp_path / "lab") as lab:
        src = str(lab.write_inventory(tmp_path / "lab.yaml"))
        inv = _edited_inventory(src, tmp_path / "inv.yaml", timeouts={"connect": 1, "operation": 2, "read": 3, "command": 5})
        res = CliRunner().invoke(app, ["-i", inv, "doctor", "--format", "json"])
    assert res.exit_code == 4
    steps = {s["name"]: s for s in json.loads(res.stdout)["hosts"][0]["steps"]}
    assert steps["connect"]["status"] == "ok"
    assert steps["tls"]["status"] == "fail" and "no TLS handshake within 1 s" in steps["tls"]["detail"]
    assert "netstat -ano" in steps["tls"]["fix"]
    assert steps["authenticate"]["status"] == "skip"


def test_global_options_may_follow_doctor_and_offline(tmp_path: Path) -> None:
    """`-i` typed after `doctor` / `offline export` is the global option (click-defined, no argv rewriting)."""
    from typer.testing import CliRunner

    from kbfix.cli import app

    missing = tmp_path / "nowhere.yml"
    for argv in (["doctor", "--format", "json", "-i", str(missing)],
                 ["offline", "export", "-o", str(tmp_path / "off"), "-i", str(missing)]):
        res = CliRunner().invoke(app, ["--state", str(tmp_path / "state"), *argv], env={"KBFIX_INVENTORY": ""})
        assert res.exit_code == 2, res.output
        assert "nowhere.yml" in res.output


def test_an_agent_that_never_finishes_fails_the_agent_step_within_the_doctor_deadline(tmp_path: Path) -> None:
    import time

    from inventory import load_inventory
    from kbfix.doctor import doctor_hosts

    hosts = load_host_fixture_text("hosts:\n  - name: STUCK\n    accounts: {'LAB\\\\kbfix': pw}\n"
                                   "    faults: {hang_command: true}\n")
    with Lab(hosts, workdir=tmp_path / "lab") as lab:
        inv = load_inventory([lab.write_inventory(tmp_path / "inv.yaml", transport="basic")])
        t0 = time.monotonic()
        [report] = doctor_hosts(inv.select(None), agent_deadline_s=2)
        took = time.monotonic() - t0
        assert lab.open_shells() == 0
    steps = {s.name: s for s in report.steps}
    assert steps["authenticate"].status.value == "ok"
    assert steps["agent"].status.value == "fail" and "did not finish within 2 s" in steps["agent"].detail
    assert steps["self_test"].status.value == "skip"
    assert took < 20


def test_doctor_table_never_prints_a_hostile_hosts_control_sequences(tmp_path: Path) -> None:
    hosts = load_host_fixture_text("hosts:\n  - name: EVIL\n    accounts: {'LAB\\\\kbfix': pw}\n"
                                   "    faults: {escape_names: true}\n")
    with Lab(hosts, workdir=tmp_path / "lab") as lab:
        inv = str(lab.write_inventory(tmp_path / "inv.yaml", transport="basic"))
        res = CliRunner().invoke(app, ["-i", inv, "-v", "doctor"])
    assert "agent answered" in res.stdout
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
