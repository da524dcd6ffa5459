"""Issue 13 — Windows as Microsoft documents it, one test per numbered item, through the lab.

Every test talks to winlab over real WS-Management (pywinrm, NTLM, loopback) unless it says
why it cannot: items 8 and 9 are PowerShell behaviour the lab does not execute (it emulates
ops, not .NET), so they are checked on the agent's source. The lab's behaviour cited here:
IUpdate.Decline clears approvals; IUpdate.Approve accepts Install/Uninstall/NotApproved only and
refuses replicas and unaccepted licences; msiexec writes a log only when asked; a 65001 shell on
Windows before 2008 R2 runs nothing (WinRb/WinRM #232).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from winrm.protocol import Protocol

from inventory import load_inventory
from kbfix.run import RunOptions, run_apply, run_check, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks import HostContext, assess, gather_ops, load_packages, load_playbooks, plan
from playbooks.model import Status
from remoting.agent_delivery import build_stdin, command_line
from remoting.agent_protocol import AgentRequest, decode_response, encode_request, op
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.session import AgentSession
from winlab.fixtures import load_host_fixture_text
from winlab.hoststate import BytesContent, FileEntry
from winlab.lab import Lab

SD = r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log"
DLL = r"C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"
SIG = ("{t} UTC\tError\tw3wp.12\tClientImplementation.SyncUpdates\tSystem.ArgumentException: "
       "An item with the same key has already been added.\r\n")
U1 = "6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d01"
U2 = "6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d02"
WSYNC = r"C:\SMS\Logs\wsyncmgr.log"
AGENT = Path(__file__).resolve().parents[1] / "remoting" / "agent.ps1"

SITE = r"""
x-account: &account {'LAB\kbfix': 'Secret-1'}
x-rtm: &rtm
  os: {version: 5.2.3790, arch: x86, culture: en-US}
  accounts: *account
  time_scale: 0
  registry:
    'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
      {VersionString: 3.0.6000.374, TargetDir: 'C:\Program Files\Update Services\', InstallType: 1}
  files:
    'C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll':
      {version: 3.0.6000.374}
    'C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log':
      {text: "2008-07-10 14:01:02.456 UTC\tError\tw3wp.12\tClientImplementation.SyncUpdates\tSystem.ArgumentException: An item with the same key has already been added.\n"}
x-updates: &updates
  - {id: 6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d01, title: Office 2003 Service Pack 1, approvals: [{group: All Computers, action: Install}]}
  - {id: 6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d02, title: Office 2003 Service Pack 1, declined: true}
x-cm: &cm
  os: {version: 6.0.6001, arch: x64, culture: en-US}
  accounts: *account
  services: {SMS_EXECUTIVE: Running, SMS_SITE_COMPONENT_MANAGER: Running}
x-cm-registry: &cm_registry
  'HKLM\SOFTWARE\Wow6432Node\Microsoft\SMS\Setup': {Full Version: 4.00.6221.1000, Installation Directory: 'C:\SMS'}
hosts:
  - {name: RTM03, <<: *rtm, wsus_updates: *updates}
  - {name: RTM-REPLICA, <<: *rtm, wsus_replica: true, wsus_updates: *updates}
  - name: RTM-EULA
    <<: *rtm
    wsus_updates: [{id: 6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d01, title: Office 2003 Service Pack 1, requires_license: true}]
  - name: CM07-NOLEGACY
    <<: *cm
    registry: *cm_registry
    files: {'C:\SMS\Logs\wsyncmgr.log': {text: "Done synchronizing SMS with WSUS Server  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:03:04.500+420><thread=1 (0x1)>\n"}}
  - name: CM07-SPLIT
    <<: *cm
    registry:
      # x64: a 64-bit SMS\Setup key WITHOUT Full Version must not hide the 32-bit one that has it
      'HKLM\SOFTWARE\Microsoft\SMS\Setup': {UI Installation Directory: 'C:\Program Files\ConfigMgr Console'}
      'HKLM\SOFTWARE\Wow6432Node\Microsoft\SMS\Setup': {Full Version: 4.00.6221.1000, Installation Directory: 'C:\SMS'}
    files: {'C:\SMS\Logs\wsyncmgr.log': {text: "Performing legacy sync  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:03:04.500+420><thread=1 (0x1)>\nUpdates summary: 0 processed, 0 matched, 0 outdated, 0 updated  $$<SMS_WSUS_SYNC_MANAGER><07-10-2008 02:03:05.500+420><thread=1 (0x1)>\n"}}
  - name: CM07-CONSOLE
    os: {version: 6.0.6001, arch: x64, culture: en-US}
    accounts: *account
    registry:
      'HKLM\SOFTWARE\Wow6432Node\Microsoft\SMS\Setup': {Full Version: 4.00.6221.1000, UI Installation Directory: 'C:\AdminUI'}
  - name: CM07-PATCHED
    <<: *cm
    registry: *cm_registry
    patches:
      - {product: '{4C6A1A40-3C5B-4E0F-8D8B-1D0C2E3F4A51}', code: '{B2E4C6A8-1F3D-4B5A-9C7E-0D2F4A6B8C11}',
         name: System Center Configuration Manager 2007 SP1 Hotfix (KB954474)}
  - name: CLIENT-RECOVERED
    os: {version: 6.1.7601, arch: x64, culture: en-US}
    accounts: *account
    registry:
      'HKLM\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate': {WUServer: 'http://RTM03'}
      'HKLM\SOFTWARE\Wow6432Node\Microsoft\Office\11.0\Common\InstallRoot': {Path: 'C:\Office11\'}
    files:
      'C:\Windows\WindowsUpdate.log':
        text: "2008-07-10\t10:15:21:203\t 956\t6d8\tPT\tWARNING: SyncUpdates failure, error = 0x8024400E, soap client error = 7, soap error code = 400, HTTP status code = 200\n2008-07-10\t10:15:21:203\t 956\t6d8\tPT\tWARNING: SOAP Fault: 0x000190\n2008-07-11\t09:00:00:000\t 956\t6d8\tAgent\t  * Found 3 updates and 41 categories in search; evaluated appl. rules of 900 out of 1500 deployed entities\n"
  - name: MSI-HOST
    os: {version: 6.0.6001, arch: x64, culture: en-US}
    accounts: *account
    time_scale: 0
    files: {'C:\Windows\Temp\kbfix-pkg.log': {text: "a previous attempt's log: Installation failed\n"}}
    installers: [{match: '*', exit_code: 0, log: "MSI (s): Installation completed successfully.\n"}]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(load_host_fixture_text(SITE, "issue13")) as running:
        yield running


def _endpoint(lab: Lab, name: str) -> Endpoint:
    ep = lab.endpoints[name]
    return Endpoint(host=name, address=ep.address, port=ep.port, scheme="http", transport="ntlm",
                    username="LAB\\kbfix", password=Secret("Secret-1"),
                    timeouts=Timeouts(connect=3, operation=10, read=15, command=60))


def _run(lab: Lab, name: str, *ops, mutate: bool = False) -> dict:
    with AgentSession(_endpoint(lab, name), check_mode=not mutate) as s:
        return s.run(list(ops)).by_id()


def _host(lab: Lab, name: str):
    return next(h for h in lab.hosts if h.name == name)


def _assess(lab: Lab, name: str, **ctx) -> object:
    books = load_playbooks()
    c = HostContext(name, **ctx)
    with AgentSession(_endpoint(lab, name), check_mode=True) as s:
        return assess(books, c, s.run(gather_ops(books, c)))


# ---- item 1: "done" from the audit store, "held" from SoftwareDistribution.log ------------------

def test_item1_rtm_workaround_is_mitigated_from_the_store_and_the_log(tmp_path: Path) -> None:
    hosts = load_host_fixture_text(SITE, "issue13")
    with Lab([h for h in hosts if h.name == "RTM03"]) as lab, AuditStore.in_dir(tmp_path / "state") as store:
        inv = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")]).select(None)
        engine = PlaybookEngine()
        planned = run_plan(inv, engine, store, RunOptions())
        assert planned.results[0].status is Status.NON_COMPLIANT
        applied = run_apply(inv, engine, store, RunOptions(), plan=planned.plan)
        assert applied.results[0].status is Status.MITIGATED, applied.results[0]
        # the lab follows IUpdate.Decline: declined, every approval gone — nothing on the host says "done"
        state = lab.hosts[0].state
        assert [(u.declined, u.approvals) for u in state.wsus_updates] == [(True, []), (True, [])]
        second = run_check(inv, PlaybookEngine(), store, RunOptions())
        f = second.results[0].findings
        kb = next(x for x in f if x.advisory == "KB954960")
        assert kb.status is Status.MITIGATED and "done by kbfix at" in kb.reason
        # a store that never saw the workaround cannot claim it
        with AuditStore.in_dir(tmp_path / "other") as empty:
            blind = run_check(inv, PlaybookEngine(), empty, RunOptions()).results[0]
        assert blind.status is Status.NON_COMPLIANT
        # the signature comes back after the workaround: non_compliant, and the reason says so
        later = (datetime.now(timezone.utc) + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.000")
        log = state.get_file(SD)
        with log.data().open() as fh:
            old = fh.read()
        state.put_file(FileEntry(SD, BytesContent(old + SIG.format(t=later).encode())))
        third = run_check(inv, PlaybookEngine(), store, RunOptions()).results[0]
        kb = next(x for x in third.findings if x.advisory == "KB954960")
        assert kb.status is Status.NON_COMPLIANT and "did not hold" in kb.reason


# ---- item 2: one op, NotApproved, always ends declined; replicas and licences refused -----------

def test_item2_workaround_op_and_the_documented_wsus_api(lab: Lab) -> None:
    r = _run(lab, "RTM03", op("f", "wsus.find_update", title="Office 2003 Service Pack 1"),
             op("all", "wsus.approve_update", id=U1, action="All"), mutate=True)
    assert [u["id"] for u in r["f"].data["updates"]] == [U1, U2]  # every match, declined ones too
    assert r["f"].data["replica"] is False
    assert r["all"].error.kind == "invalid_args"  # WSUS 3.0: Install, Uninstall, NotApproved only
    r = _run(lab, "RTM03", op("w", "wsus.workaround", id=[U1, U2]), mutate=True)
    assert r["w"].ok, r["w"].error
    steps = {u["id"]: u["steps"] for u in r["w"].data["updates"]}
    assert steps == {U1: ["decline", "approve NotApproved", "decline"], U2: ["approve NotApproved", "decline"]}
    assert all(u["declined"] and u["approvals"] == [] for u in r["w"].data["updates"])
    for name, words in (("RTM-REPLICA", "replica"), ("RTM-EULA", "RequiresLicenseAgreementAcceptance")):
        before = [(u.declined, list(u.approvals)) for u in _host(lab, name).state.wsus_updates]
        r = _run(lab, name, op("w", "wsus.workaround", id=[U1]), mutate=True)
        assert not r["w"].ok and words in r["w"].error.message
        # refused before any change: nothing declined or approved
        assert [(u.declined, list(u.approvals)) for u in _host(lab, name).state.wsus_updates] == before
    rep = _run(lab, "RTM-REPLICA", op("d", "wsus.decline_update", id=U1), mutate=True)
    assert not rep["d"].ok and "replica" in rep["d"].error.message  # IUpdate.Decline throws on a replica
    books = load_playbooks(["KB954960"])
    for name, words in (("RTM-REPLICA", "upstream"), ("RTM-EULA", "licence")):
        a = plan(books, _assess(lab, name), None)
        f = a.finding("KB954960")
        assert f.planned == [] and any(words in n for n in f.notes), f.notes


# ---- item 3: codepage 437; a 65001 shell on NT 5.x/6.0 runs nothing ------------------------------

def test_item3_codepage_65001_returns_nothing_on_server_2003_and_the_client_uses_437(lab: Lab) -> None:
    ep = lab.endpoints["RTM03"]
    p = Protocol(ep.url, transport="ntlm", username="LAB\\kbfix", password="Secret-1",
                 read_timeout_sec=30, operation_timeout_sec=20)
    req = AgentRequest((op("e", "env.expand", text="%COMPUTERNAME%"),))
    cmd, args = command_line()
    shell = p.open_shell(codepage=65001)
    try:
        cid = p.run_command(shell, cmd, args)
        p.send_command_input(shell, cid, build_stdin(encode_request(req)), end=True)
        out, err, code = p.get_command_output(shell, cid)
    finally:
        p.close_shell(shell)
    assert (out, err, code) == (b"", b"", 0)  # WinRb/WinRM #232: returns at once, runs nothing
    # kbfix's own session opens 437 and gets its answer from the same host
    assert _run(lab, "RTM03", op("e", "env.expand", text="%COMPUTERNAME%"))["e"].data == {"value": "RTM03"}


# ---- item 4: KB954474 from the Windows Installer patch registration ------------------------------

def test_item4_hotfix_is_read_from_the_patch_registration(lab: Lab) -> None:
    f = _assess(lab, "CM07-PATCHED").finding("KB954474")
    assert f.status is Status.COMPLIANT and "Windows Installer patch registration" in f.reason


# ---- item 5: scope (legacy sync) and the role guard ----------------------------------------------

def test_item5_no_legacy_sync_is_not_affected_and_console_is_not_a_site_server(lab: Lab) -> None:
    f = _assess(lab, "CM07-NOLEGACY").finding("KB954474")
    assert f.status is Status.NOT_APPLICABLE and "SMS 2003" in f.reason
    declared = _assess(lab, "CM07-NOLEGACY", vars={"kb954474_sms2003_clients": True}).finding("KB954474")
    assert declared.status is Status.NON_COMPLIANT
    console = _assess(lab, "CM07-CONSOLE")
    assert "configmgr_site_server" not in console.roles
    assert console.finding("KB954474").status is Status.NOT_APPLICABLE


# ---- item 6: installer evidence ------------------------------------------------------------------

def test_item6_installer_log_is_this_runs_or_none(lab: Lab) -> None:
    pkg = b"stand-in package"
    sha = hashlib.sha256(pkg).hexdigest()
    log = r"C:\Windows\Temp\kbfix-pkg.log"
    r = _run(lab, "MSI-HOST", op("u", "file.upload", path=r"C:\Windows\Temp\pkg.exe", data=pkg),
             op("x", "installer.run", path=r"C:\Windows\Temp\pkg.exe", sha256=sha, arg=["/quiet"], log_path=log),
             mutate=True)
    assert r["x"].data["outcome"] == "success"
    assert r["x"].data["log_tail"] is None  # the command line asked for no log: the old one is not evidence
    assert _host(lab, "MSI-HOST").state.get_file(log) is None  # deleted before the start
    r = _run(lab, "MSI-HOST", op("u", "file.upload", path=r"C:\Windows\Temp\pkg.msi", data=pkg),
             op("x", "installer.run", path=r"C:\Windows\Temp\pkg.msi", sha256=sha, arg=["/quiet", "/l*v", log], log_path=log),
             mutate=True)
    assert "Installation completed successfully" in r["x"].data["log_tail"]


# ---- item 7: UNC sources refused at plan time ----------------------------------------------------

def test_item7_unc_source_is_refused_at_plan_time(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text(
        "packages:\n  - kb: KB954474\n    file: SCCM2007-SP1-KB954474-x86.msp\n"
        f"    sha256: '{'c' * 64}'\n    source: '\\\\\\\\files\\\\patches\\\\SCCM2007-SP1-KB954474-x86.msp'\n",
        encoding="utf-8")
    books = load_playbooks(["KB954474"])
    f = plan(books, _assess(lab, "CM07-SPLIT"), load_packages(tmp_path)).finding("KB954474")
    assert f.status is Status.NON_COMPLIANT and f.planned == []
    assert any("UNC source" in n and "delegated credentials" in n for n in f.notes)


# ---- item 8: memory (agent source: the lab does not run .NET) --------------------------------------

def test_item8_agent_streams_its_answer_and_the_default_limit_fits_the_quota() -> None:
    text = AGENT.read_text(encoding="utf-8")
    main = text[text.index("# ------------------------------------------------------------------------------ main"):]
    # no full document, base64 copy or framed copy: each result leaves as soon as it is known
    assert "Write-Base64Piece $ms $gz $json $false" in main and "$parts" not in main  # gz: PROTOCOL.md "Response"
    assert "ToBase64String($buf, $pos, [Math]::Min(57" in text  # 57 bytes → one 76-char line
    assert AgentRequest(()).limit == 8 * 1024 * 1024
    assert "[long]8388608" in text


# ---- item 9: FIPS (agent source: the lab does not run .NET) ---------------------------------------

def test_item9_sha256_falls_back_to_the_fips_validated_provider() -> None:
    text = AGENT.read_text(encoding="utf-8")
    body = text[text.index("function New-Sha256"):text.index("function Get-Sha256Hex")]
    assert body.index("SHA256Managed") < body.index("SHA256CryptoServiceProvider") < body.index("Stop-Op")
    assert "$sha = New-Sha256" in text and "New-Object System.Security.Cryptography.SHA256Managed\n" not in text


# ---- item 10: registry views per value -------------------------------------------------------------

def test_item10_a_64_bit_key_without_the_value_does_not_hide_the_32_bit_one(lab: Lab) -> None:
    a = _assess(lab, "CM07-SPLIT")
    assert "configmgr_site_server" in a.roles
    f = a.finding("KB954474")
    assert (f.status, f.variant) == (Status.NON_COMPLIANT, "sp1")
    assert a.facts["sms_setup"]["value_views"]["Full Version"] == "32"


# ---- item 11: a successful sync after the failure clears the client ----------------------------------

def test_item11_client_that_synced_since_is_not_affected(lab: Lab) -> None:
    a = _assess(lab, "CLIENT-RECOVERED")
    assert "office2003" in a.roles
    f = a.finding("KB954960")
    assert f.status is Status.NOT_APPLICABLE and "successful search after it" in f.reason


# ---- item 12: one scan per file ----------------------------------------------------------------------

def test_item12_the_same_log_is_scanned_once(lab: Lab) -> None:
    host = _host(lab, "RTM03")
    before = host.records.log_scans[SD.lower()]
    key = r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup"
    args = {"pattern": ["ArgumentException"], "tail_bytes": 1 << 20}
    r = _run(lab, "RTM03", op("s", "registry.values", key=key),
             op("a", "log.scan", path=r"${reg:s:TargetDir}\LogFiles\SoftwareDistribution.log", **args),
             op("b", "log.scan", path=r"%ProgramFiles%\Update Services\LogFiles\SoftwareDistribution.log", **args))
    assert host.records.log_scans[SD.lower()] - before == 1
    assert r["b"].data == {"files": [], "same_as": "a"} and r["a"].data["files"][-1]["matches"]
    # the gather's facts count the lines once
    f = _assess(lab, "RTM03").facts["kb954960_sdlog"]
    assert f["hits"]["sync_argument_exception"] >= 1
    assert len({x["path"].lower() for x in f["files"] if x.get("exists")}) == len([x for x in f["files"] if x.get("exists")])


def test_item12_per_line_cost_has_no_exception_path() -> None:
    text = AGENT.read_text(encoding="utf-8")
    body = text[text.index("function Decode-Line"):text.index("function Find-Newline")]
    code = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("#"))
    assert not re.search(r"\btry\b|\bcatch\b", code)  # no exception as control flow per line
    assert "IndexOf([char]0xFFFD)" in code


# ---- the lab answers as agent.ps1 does where the protocol leaves it to the implementation ---------

def test_lab_reads_requests_ops_and_paths_as_the_agent_does(lab: Lab) -> None:
    host = _host(lab, "RTM03")
    nonce = "0123456789abcdef0123456789abcdef"
    def arg(key: str, value: str) -> str:
        return f"arg\t{key}\t{base64.b64encode(value.encode()).decode()}"

    setup = r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup"
    doc = "\n".join([
        "kbfix-agent-request\t1", f"nonce\t{nonce}",
        "op\tbad\tenv.expand", "arg\ttext\t!!not base64!!",   # a bad argument fails its op only
        "op\tcase\tENV.Expand", arg("text", "%windir%"),        # op names: case-insensitive
        "op\tf\tfile.info", arg("path", "${reg:s:TargetDir}"),  # not resolvable yet: not_found
        "op\ts\tregistry.values", arg("key", setup),
        "op\tp\tfile.info", arg("path", r"${reg:s:TargetDir}\LogFiles\SoftwareDistribution.log"),
    ]).encode() + b"\n"
    cmd, args = command_line()
    res = host.execute(cmd, args, build_stdin(doc), {}, 437, threading.Event())
    assert res.exit_code == 0, res.stderr
    r = decode_response(res.stdout, nonce).by_id()
    assert r["bad"].error.kind == "invalid_args" and "not base64" in r["bad"].error.message
    assert r["case"].ok and r["case"].op == "ENV.Expand" and r["case"].data == {"value": r"C:\WINDOWS"}
    assert r["f"].error.kind == "not_found"
    # TargetDir ends in a backslash: the agent returns the path as expanded, doubled separator and all
    assert r["p"].data["exists"] and r["p"].data["path"] == "C:\\Program Files\\Update Services\\\\LogFiles\\SoftwareDistribution.log"
