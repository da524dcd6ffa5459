"""The agent emulator through `EmulatedHost.execute`, with the exact bytes the client sends.

Every request here is built by `remoting.agent_delivery` (command_line, build_stdin) and
`remoting.agent_protocol` (encode_request), and every answer decoded by the latter, so these tests exercise the wire format too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from typing import Any

import pytest

from remoting import agent_delivery, agent_protocol
from remoting.agent_delivery import build_stdin, command_line
from remoting.agent_protocol import AgentRequest, OpRequest, encode_request, op
from winlab.fixtures import demo_site, load_host_fixture_text
from winlab.host import AGENT_MISMATCH, CMD_NOT_FOUND_EXIT, EmulatedHost, run_agent_request
from winlab.hoststate import pack_guid

SETUP = r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup"
DLL = r"${reg:s:TargetDir}\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll"
SDLOG = r"${reg:s:TargetDir}\LogFiles\SoftwareDistribution.log"
DUPKEY = r"ClientImplementation\.SyncUpdates\s+System\.ArgumentException"


@pytest.fixture(scope="module")
def site() -> dict[str, EmulatedHost]:
    """A fresh demo site per module (tests that mutate state build their own hosts)."""
    return {h.name: h for h in demo_site()}


def call(host: EmulatedHost, *ops: OpRequest, limit: int | None = None) -> dict[str, Any]:
    """Run ops on host; results by id as {ok, data, error}."""
    req = AgentRequest(tuple(ops)) if limit is None else AgentRequest(tuple(ops), limit=limit)
    res, resp = run_agent_request(host, req)
    assert res.exit_code == 0, res.stderr
    assert resp is not None
    return {r.id: r for r in resp.results} | {"__truncated": resp.truncated, "__host": resp.host}


def test_agent_command_line_and_stdin_are_the_shipped_ones(site: dict[str, EmulatedHost]) -> None:
    host = site["WSUS-SP1"]
    req = AgentRequest((op("e", "env.expand", text="%windir%"),))
    cmd, args = command_line()
    res = host.execute(cmd, args, build_stdin(encode_request(req)), {}, 437, threading.Event())
    resp = agent_protocol.decode_response(res.stdout, req.nonce)
    assert res.exit_code == 0 and resp.by_id()["e"].data == {"value": r"C:\Windows"}
    assert resp.host == {"computer_name": "WSUS-SP1", "os_version": "6.0.6001", "arch": "x64",
                         "culture": "en-US", "ps_version": "2.0"}


def test_tampered_agent_is_refused(site: dict[str, EmulatedHost]) -> None:
    host = site["WSUS-SP1"]
    req = AgentRequest((op("e", "env.expand", text="x"),))
    cmd, args = command_line()
    tampered = agent_delivery.read_agent_bytes() + b"\n# extra line\n"
    res = host.execute(cmd, args, build_stdin(encode_request(req), agent=tampered), {}, 437, threading.Event())
    assert res.exit_code == 1 and AGENT_MISMATCH.encode() in res.stderr and res.stdout == b""


def test_agent_cut_to_the_request_runs_and_a_cut_that_lacks_an_op_is_refused(site: dict[str, EmulatedHost]) -> None:
    # The session sends only the agent sections the request's ops use (agent_for_ops): the lab
    # runs exactly that cut, and refuses a cut without the section a named op needs.
    host = site["WSUS-SP1"]
    cmd, args = command_line()
    read = AgentRequest((op("e", "env.expand", text="x"),))
    cut = agent_delivery.read_agent_bytes(["env.expand"])
    assert len(cut) < len(agent_delivery.read_agent_bytes()) * 0.85
    res = host.execute(cmd, args, build_stdin(encode_request(read), ops=["env.expand"]), {}, 437, threading.Event())
    assert res.exit_code == 0 and agent_protocol.decode_response(res.stdout, read.nonce).by_id()["e"].ok
    for needs in (op("h", "host.environment"), op("r", "system.reboot")):
        req = AgentRequest((needs,))
        res = host.execute(cmd, args, build_stdin(encode_request(req), agent=cut), {}, 437, threading.Event())
        assert res.exit_code == 1 and AGENT_MISMATCH.encode() in res.stderr and res.stdout == b""
    assert host.records.snapshot()["mutations"] == []


def test_other_bootstrap_or_command_is_not_run(site: dict[str, EmulatedHost]) -> None:
    host = site["WSUS-SP1"]
    before = host.records.processes_started
    res = host.execute("ipconfig", ["/all"], b"", {}, 437, threading.Event())
    assert res.exit_code == CMD_NOT_FOUND_EXIT
    assert res.stderr == b"'ipconfig' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
    cmd, args = command_line(bootstrap_text="Write-Output 'hello'")
    stdin = build_stdin(encode_request(AgentRequest((op("e", "env.expand", text="x"),))))
    res = host.execute(cmd, args, stdin, {}, 437, threading.Event())
    assert res.exit_code == 1 and res.stderr.startswith(b"#< CLIXML") and res.stdout == b""
    assert host.records.processes_started == before + 2
    assert host.execute("hostname", [], b"", {}, 437, threading.Event()) == host.execute(
        "cmd /c hostname", [], b"", {}, 437, threading.Event())
    assert host.execute("hostname", [], b"", {}, 437, threading.Event()).stdout == b"WSUS-SP1\r\n"
    assert host.execute("echo", ["%COMPUTERNAME%"], b"", {}, 437, threading.Event()).stdout == b"WSUS-SP1\r\n"
    assert host.execute("whoami", [], b"", {}, 437, threading.Event()).stdout == b"wsus-sp1\\kbfix\r\n"
    res = host.execute("cmd.exe", ["/c", "nosuch.exe", "x"], b"", {}, 437, threading.Event())
    assert res.exit_code == CMD_NOT_FOUND_EXIT and res.stderr.startswith(b"'nosuch.exe' is not recognized")


def test_wsus_probe_with_references_and_views(site: dict[str, EmulatedHost]) -> None:
    r = call(
        site["WSUS-SP1"],
        op("s", "registry.values", key=SETUP),
        op("dll", "file.info", path=DLL, sha256=True),
        op("log", "log.scan", path=SDLOG, pattern=[DUPKEY, r"SoapUtilities\.CreateException"], context=2),
    )
    views = r["s"].data["views"]
    assert views["64"]["exists"] and views["64"]["values"]["VersionString"] == {"type": "REG_SZ", "value": "3.1.6001.65"}
    assert views["64"]["values"]["InstallType"] == {"type": "REG_DWORD", "value": 1}
    assert views["32"] == {"exists": False, "path": r"HKLM\SOFTWARE\Wow6432Node\Microsoft\Update Services\Server\Setup",
                           "values": {}, "subkeys": []}
    dll = r["dll"].data
    assert dll["exists"] and dll["file_version"] == "3.1.6001.65" and len(dll["sha256"]) == 64
    lf = r["log"].data["files"][-1]
    assert lf["exists"] and lf["encoding"] == "ansi" and lf["end_offset"] == lf["size"]  # ASCII only: PROTOCOL.md
    by_pat = [[m for m in lf["matches"] if m["pattern"] == i] for i in (0, 1)]
    assert len(by_pat[0]) == 2 and len(by_pat[1]) == 2
    first = by_pat[0][0]
    assert "Key in dictionary: '8862'" in first["line"] and first["line"].startswith("2008-07-30 09:00:02.468 UTC\tError\tw3wp.12")
    assert len(first["before"]) == 2 and first["after"][0].strip().startswith("at System.Collections.Hashtable.Insert")
    raw = site["WSUS-SP1"].state.get_file(r"c:\program files\update services\logfiles\softwaredistribution.log")
    with raw.data().open() as f:  # type: ignore[union-attr]
        f.seek(first["offset"])
        assert f.readline().decode("utf-8").rstrip("\r\n") == first["line"]


def test_configmgr_x64_wow6432_reference_and_rotated_log(site: dict[str, EmulatedHost]) -> None:
    r = call(
        site["CM07-SITE"],
        op("sms", "registry.values", key=r"hklm\software\microsoft\sms\setup", name=["full version", "Installation Directory"]),
        op("log", "log.scan", path=r"${reg:sms:Installation Directory}\Logs\wsyncmgr.log",
           pattern=["Unexpected DeploymentAction for update 1293995", "Updates summary: 0 processed"], rotated=True),
        op("p", "products.list", pattern="*configuration manager 2007*"),
    )
    v = r["sms"].data["views"]
    assert not v["64"]["exists"] and v["32"]["path"] == r"HKLM\SOFTWARE\Wow6432Node\Microsoft\SMS\Setup"
    assert set(v["32"]["values"]) == {"Full Version", "Installation Directory"}
    files = r["log"].data["files"]
    assert [f["path"].rsplit("\\", 1)[-1] for f in files] == ["wsyncmgr.lo_", "wsyncmgr.log"]
    assert files[0]["matches"] == [] and len(files[1]["matches"]) == 2
    assert files[1]["matches"][0]["line"].endswith("$$<SMS_WSUS_SYNC_MANAGER><07-30-2008 02:00:11.046+420><thread=3456 (0xD80)>")
    prods = r["p"].data["products"]
    assert [(p["name"], p["view"]) for p in prods] == [("Microsoft System Center Configuration Manager 2007", "32")]


def test_x86_both_views_are_the_native_key(site: dict[str, EmulatedHost]) -> None:
    r = call(site["WSUS-RTM"], op("s", "registry.values", key=SETUP, name="VersionString"),
             op("p", "products.list"), op("e", "env.expand", text="%ProgramFiles%|%ProgramFiles(x86)%|%PROCESSOR_ARCHITECTURE%"))
    v = r["s"].data["views"]
    assert v["64"] == v["32"] and v["32"]["values"]["VersionString"]["value"] == "3.0.6000.374"
    assert {p["view"] for p in r["p"].data["products"]} == {"32"}
    assert r["e"].data["value"] == r"C:\Program Files|%ProgramFiles(x86)%|x86"


def test_subkeys_and_unresolved_reference(site: dict[str, EmulatedHost]) -> None:
    r = call(
        site["OFFICE-CL01"],
        op("pol", "registry.values", key=r"HKLM\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate", view="64", subkeys=True),
        op("bad", "file.info", path=r"${reg:pol:NoSuchValue}\x.dll"),
        op("bad2", "file.info", path=r"${reg:nosuchop:Path}\x.dll"),
        op("o", "registry.values", key=r"HKLM\SOFTWARE\Microsoft\Office\11.0\Common\InstallRoot", name="Path"),
    )
    pol = r["pol"].data["views"]["64"]
    assert pol["values"]["WUServer"]["value"] == "http://WSUS-SP1" and pol["subkeys"] == ["AU"]
    assert r["bad"].error.kind == "not_found" and r["bad"].error.message == "unresolved reference ${reg:pol:NoSuchValue}"
    assert r["bad2"].error.kind == "not_found"
    assert r["o"].data["views"]["32"]["values"]["Path"]["value"].endswith("OFFICE11\\")


@pytest.mark.parametrize(
    ("name", "encoding", "text"),
    [
        ("WSUS-DK", "ansi", "Elementet er allerede tilføjet. Nøgle i ordbog: '8862'"),
        ("WSUS-DE", "utf-16le", "Das Element wurde bereits hinzugefügt. Schlüssel im Wörterbuch"),
        ("WSUS-NL", "utf-8", "Item is al toegevoegd. Sleutel in woordenlijst: 8862"),
        ("WSUS-CN", "ansi", "已添加项。字典中的关键字:“8862”"),
    ],
)
def test_localized_logs_arrive_intact(site: dict[str, EmulatedHost], name: str, encoding: str, text: str) -> None:
    host = site[name]
    r = call(host, op("s", "registry.values", key=SETUP, name="TargetDir"),
             op("log", "log.scan", path=SDLOG, pattern=DUPKEY, max_matches=1))
    lf = r["log"].data["files"][0]
    assert lf["encoding"] == encoding and lf["patterns_full"] == [0]
    m = lf["matches"][0]
    assert text in m["line"] and "System.ArgumentException" in m["line"]
    # The byte offset points at the line's first byte in the raw file (UTF-16: 2 bytes per unit).
    fe = host.state.get_file(r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log")
    with fe.data().open() as f:  # type: ignore[union-attr]
        raw = f.read()
    codec = {"utf-16le": "utf-16-le", "utf-8": "utf-8"}.get(encoding, host.state.os.ansi_codepage)
    assert raw[m["offset"]:].decode(codec, "replace").startswith(m["line"])
    # Scanning again from end_offset finds nothing new (the first match filled the pattern).
    assert lf["end_offset"] > m["offset"]


def test_offsets_tail_and_start(site: dict[str, EmulatedHost]) -> None:
    host = site["HEALTHY-CL02"]
    path = r"C:\Windows\WindowsUpdate.log"
    r = call(host, op("all", "log.scan", path=path, pattern="Service", max_matches=1000))
    lf = r["all"].data["files"][0]
    size = lf["size"]
    assert lf["encoding"] == "ansi" and lf["start_offset"] == 0 and lf["end_offset"] == size  # ASCII only: PROTOCOL.md
    # tail: only lines that start inside the window, the partial first line dropped
    r = call(host, op("t", "log.scan", path=path, pattern=".", tail_bytes=1000, max_matches=1000))
    t = r["t"].data["files"][0]
    assert t["start_offset"] == size - 1000 and all(m["offset"] > size - 1000 for m in t["matches"])
    assert t["matches"] and t["matches"][-1]["offset"] < size
    # start_offset: continue from a previous end_offset; beyond the size means the file was replaced
    mid = lf["matches"][len(lf["matches"]) // 2]["offset"]
    r = call(host, op("s", "log.scan", path=path, pattern="Service", max_matches=1000, start_offset=mid),
             op("big", "log.scan", path=path, pattern="Service", max_matches=1000, start_offset=size + 10))
    s = r["s"].data["files"][0]
    assert s["matches"][0]["offset"] == mid and s["matches"] == [m for m in lf["matches"] if m["offset"] >= mid]
    assert r["big"].data["files"][0]["start_offset"] == 0 and len(r["big"].data["files"][0]["matches"]) == len(lf["matches"])


def test_max_matches_stops_early_and_end_offset_resumes(site: dict[str, EmulatedHost]) -> None:
    host = site["HEALTHY-CL02"]
    path = r"C:\Windows\WindowsUpdate.log"
    r = call(host, op("a", "log.scan", path=path, pattern="Agent", max_matches=3))
    a = r["a"].data["files"][0]
    assert len(a["matches"]) == 3 and a["patterns_full"] == [0] and a["end_offset"] < a["size"]
    r = call(host, op("b", "log.scan", path=path, pattern="Agent", max_matches=3, start_offset=a["end_offset"]))
    b = r["b"].data["files"][0]
    assert b["matches"][0]["offset"] > a["matches"][-1]["offset"]


def test_max_line_chars_cuts_and_flags(site: dict[str, EmulatedHost]) -> None:
    # Patterns see the cut line, as in the agent: text past the cut does not match.
    r = call(site["OFFICE-CL01"], op("l", "log.scan", path=r"%windir%\WindowsUpdate.log", pattern="^2016.*Criteria", max_line_chars=40),
             op("w", "log.scan", path=r"%windir%\WindowsUpdate.log", pattern="^2016.*Agent", max_line_chars=40))
    assert r["l"].data["files"][0]["matches"] == []
    m = r["w"].data["files"][0]["matches"][0]
    assert m["cut"] is True and len(m["line"]) == 40


def test_missing_files_and_bad_args(site: dict[str, EmulatedHost]) -> None:
    r = call(
        site["WSUS-SP1"],
        op("f", "file.info", path=r"C:\nope\x.dll"),
        op("l", "log.scan", path=r"C:\nope\x.log", pattern="x"),
        op("rx", "log.scan", path=r"C:\nope\x.log", pattern="(unclosed"),
        op("mm", "log.scan", path=r"C:\nope\x.log", pattern="x", max_matches=5000),
        OpRequest("miss", "file.info", {}),
        OpRequest("unk", "no.such.op", {}),
        op("v", "registry.values", key=SETUP, view="48"),
        op("after", "env.expand", text="%COMPUTERNAME%"),
    )
    assert r["f"].ok and r["f"].data["exists"] is False and r["f"].data["size"] is None
    assert r["l"].ok and r["l"].data["files"] == [{"path": r"C:\nope\x.log", "exists": False, "size": 0, "encoding": None,
                                                   "start_offset": 0, "end_offset": 0, "matches": [], "patterns_full": []}]
    for k in ("rx", "mm", "miss", "unk", "v"):
        assert r[k].error.kind == "invalid_args", k
    assert r["after"].data["value"] == "WSUS-SP1"


def test_services_and_wsus_ops() -> None:
    host = demo_site()[0]
    r = call(host, op("s", "service.status", name=["wsusservice", "NoSuch"]),
             op("f", "wsus.find_update", title="office 2003 service pack 1"))
    assert r["s"].data["services"]["wsusservice"] == {"exists": True, "status": "Running", "start_mode": "Auto"}
    assert r["s"].data["services"]["NoSuch"]["exists"] is False
    found = r["f"].data
    assert found["available"] and [u["title"] for u in found["updates"]] == ["Office 2003 Service Pack 1"]
    uid = found["updates"][0]["id"]
    host.state.services["wsusservice"].status = "Stopped"
    r = call(host, op("d", "wsus.decline_update", id=uid), op("a", "wsus.approve_update", id=uid, action="uninstall", group="all computers"),
             op("bad", "wsus.approve_update", id="not-a-guid"), op("g", "wsus.approve_update", id=uid, group="Nobody"),
             op("r", "service.restart", name="WsusService"), op("rx", "service.restart", name="NoSuch"),
             op("f", "wsus.find_update", title="Office 2003 Service Pack 1"))
    assert r["d"].data == {"id": uid, "declined": True}
    assert r["a"].data["approvals"] == [{"group": "All Computers", "action": "Uninstall"}]
    assert r["bad"].error.kind == "invalid_args" and r["g"].error.kind == "not_found"
    assert r["r"].data == {"status": "Running"} and r["rx"].error.kind == "not_found"
    assert r["f"].data["updates"][0]["declined"] is False  # approved again: no longer declined (ApprovedStates)
    assert [m.op for m in host.records.mutations] == ["wsus.decline_update", "wsus.approve_update", "service.restart"]
    client = {h.name: h for h in demo_site()}["OFFICE-CL01"]
    assert call(client, op("f", "wsus.find_update", title="x"))["f"].data == {"available": False, "replica": False, "updates": []}


def _upload(host: EmulatedHost, path: str, data: bytes, chunk: int = 7) -> dict[str, Any]:
    ops = [op(f"u{i}", "file.upload", path=path, data=data[i:i + chunk], offset=i) for i in range(0, len(data), chunk)]
    return call(host, *ops)


def test_upload_install_fix_visible_on_second_run() -> None:
    host = {h.name: h for h in demo_site()}["WSUS-SP1"]
    host.time_scale = 0.01
    pkg = b"MZ fake WSUS3.0SP1-KB954960-x64 package " * 50
    path = r"%TEMP%\kbfix\WSUS3.0SP1-KB954960-x64.exe"
    r = _upload(host, path, pkg)
    assert all(v.ok for k, v in r.items() if not k.startswith("__"))
    gap = call(host, op("g", "file.upload", path=path, data=b"x", offset=3))
    assert gap["g"].error.kind == "invalid_args"
    info = call(host, op("i", "file.info", path=path, sha256=True))["i"].data
    assert info["size"] == len(pkg) and info["sha256"] == hashlib.sha256(pkg).hexdigest()
    bad = call(host, op("x", "installer.run", path=path, sha256="0" * 64))
    assert bad["x"].error.kind == "hash_mismatch"
    dll_before = call(host, op("s", "registry.values", key=SETUP), op("d", "file.info", path=DLL))["d"].data
    assert dll_before["file_version"] == "3.1.6001.65"
    started = time.monotonic()
    log = host.state.expand(r"%TEMP%\kbfix\KB954960.log")  # an .exe writes a log only where its own switch says
    run = call(host, op("x", "installer.run", path=path, sha256=hashlib.sha256(pkg).hexdigest(),
                        arg=["/quiet", "/norestart", "/log:" + log], log_path=r"%TEMP%\kbfix\KB954960.log"))
    took = time.monotonic() - started
    data = run["x"].data
    assert data["exit_code"] == 0 and data["outcome"] == "success" and data["seconds"] == 2.0
    assert "Installation completed successfully" in data["log_tail"] and 0.015 <= took < 1.5
    after = call(host, op("s", "registry.values", key=SETUP), op("d", "file.info", path=DLL))["d"].data
    assert after["file_version"] == "3.1.6001.66" and after["mtime"] != dll_before["mtime"]
    assert [m.op for m in host.records.mutations].count("installer.run") == 1
    assert all("MZ fake" not in m.detail for m in host.records.mutations)


def test_installer_codes_outcomes_and_rtm_not_applicable() -> None:
    hosts = {h.name: h for h in demo_site()}
    rtm = hosts["WSUS-RTM"]
    rtm.time_scale = 0
    pkg = b"pkg"
    sha = hashlib.sha256(pkg).hexdigest()
    _upload(rtm, r"C:\Temp\WSUS3.0SP1-KB954960-x86.exe", pkg)
    _upload(rtm, r"C:\Temp\other.msi", pkg)
    r = call(rtm, op("a", "installer.run", path=r"C:\Temp\WSUS3.0SP1-KB954960-x86.exe", sha256=sha),
             op("b", "installer.run", path=r"C:\Temp\WSUS3.0SP1-KB954960-x86.exe", sha256=sha, success_codes=[0, 1642]),
             op("c", "installer.run", path=r"C:\Temp\other.msi", sha256=sha, arg=["/qn"]),
             op("ui", "installer.run", path=r"C:\Temp\other.msi", sha256=sha, timeout=5),
             op("n", "installer.run", path=r"C:\Temp\missing.exe", sha256=sha))
    assert (r["a"].data["exit_code"], r["a"].data["outcome"]) == (1642, "failed")
    assert r["b"].data["outcome"] == "success" and r["c"].data["exit_code"] == 1603
    assert r["n"].error.kind == "not_found"
    assert r["ui"].error.kind == "timeout"  # msiexec without /quiet or /q waits on an invisible dialog
    dll = call(rtm, op("s", "registry.values", key=SETUP), op("d", "file.info", path=DLL))["d"].data
    assert dll["file_version"] == "3.0.6000.374"
    reboot = load_host_fixture_text(
        "hosts:\n- name: R\n  installers: [{match: '*.msp', exit_code: 3010, sets: {products: [Fixed]}}]\n")[0]
    _upload(reboot, r"C:\p.msp", pkg)
    rr = call(reboot, op("x", "installer.run", path=r"C:\p.msp", sha256=sha, arg=["/quiet"]), op("p", "products.list", pattern="fixed"))
    assert rr["x"].data["outcome"] == "reboot_required" and rr["p"].data["products"][0]["name"] == "Fixed"


def test_configmgr_hotfix_registers_a_windows_installer_patch() -> None:
    # An .msp registers under Installer\UserData\S-1-5-18\Products\<packed product>\Patches\<packed
    # patch> (PatchesEx), not as an Uninstall entry of its own.
    host = {h.name: h for h in demo_site()}["CM07-SITE"]
    host.time_scale = 0
    pkg = b"SCCM2007-SP1-KB954474-x86-ENU.msp"
    _upload(host, r"C:\Temp\SCCM2007-SP1-KB954474-x86-ENU.msp", pkg)
    assert call(host, op("p", "products.patches", pattern="*KB954474*"))["p"].data["patches"] == []
    call(host, op("x", "installer.run", path=r"C:\Temp\SCCM2007-SP1-KB954474-x86-ENU.msp", sha256=hashlib.sha256(pkg).hexdigest(),
                  arg=["/quiet", "/norestart"]))
    (patch,) = call(host, op("p", "products.patches", pattern="*KB954474*"))["p"].data["patches"]
    assert patch["state"] == 1 and patch["product_code"] == pack_guid("{4C6A1A40-3C5B-4E0F-8D8B-1D0C2E3F4A51}")
    assert call(host, op("p", "products.list", pattern="*KB954474*"))["p"].data["products"] == []
    assert pack_guid("{12345678-ABCD-EF01-2345-6789ABCDEF01}") == "87654321DCBA10FE32547698BADCFE10"


def test_installer_cancel_and_timeout() -> None:
    host = load_host_fixture_text("hosts:\n- name: SLOW\n  installers: [{match: '*', seconds: 30}]\n")[0]
    host.time_scale = 0.05  # 30 simulated seconds = 1.5 s of wall time, unless cancelled
    pkg = b"x"
    _upload(host, r"C:\slow.exe", pkg)
    sha = hashlib.sha256(pkg).hexdigest()
    r = call(host, op("t", "installer.run", path=r"C:\slow.exe", sha256=sha, timeout=1))
    assert r["t"].error.kind == "timeout"
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    _res, resp = run_agent_request(host, AgentRequest((op("x", "installer.run", path=r"C:\slow.exe", sha256=sha),)), cancel=cancel)
    assert time.monotonic() - started < 5 and resp is not None and not resp.results[0].ok


def test_response_limit_truncates() -> None:
    host = {h.name: h for h in demo_site()}["HEALTHY-CL02"]
    # distinct arguments: an identical scan of the same file is answered `same_as` (one scan per file)
    ops = [op(f"l{i}", "log.scan", path=r"C:\Windows\WindowsUpdate.log", pattern=".", max_matches=60 + i) for i in range(3)]
    one = len(json.dumps({"x": call(host, ops[0])["l0"].data}))
    r = call(host, *ops, op("z", "env.expand", text="x"), limit=int(one * 1.5) + 1000)
    assert r["__truncated"] is True
    assert r["l0"].ok and r["l1"].error.kind == "limit" and r["z"].error.kind == "limit"
    assert call(host, *ops, limit=one * 4)["__truncated"] is False


def test_drop_after_mutation_and_ps_start_faults() -> None:
    host = load_host_fixture_text(
        "hosts:\n- name: D\n  faults: {drop_after_mutation: true, ps_start_ms: 50}\n  time_scale: 1\n")[0]
    res, _ = run_agent_request(host, AgentRequest((op("e", "env.expand", text="x"),)))
    assert res.drop_connection is False
    started = time.monotonic()
    res, _ = run_agent_request(host, AgentRequest((op("u", "file.upload", path=r"C:\a.txt", data=b"abc"),)))
    assert res.drop_connection is True and time.monotonic() - started >= 0.045
    assert host.state.get_file(r"c:\A.TXT") is not None and [m.op for m in host.records.mutations] == ["file.upload"]


def test_hang_command_blocks_until_cancel() -> None:
    host = load_host_fixture_text("hosts:\n- name: H\n  faults: {hang_command: true}\n")[0]
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    res, resp = run_agent_request(host, AgentRequest((op("e", "env.expand", text="x"),)), cancel=cancel)
    assert 0.09 <= time.monotonic() - started < 5 and resp is None and res.exit_code != 0


def test_binary_and_multi_sz_values() -> None:
    host = load_host_fixture_text(
        "hosts:\n- name: B\n  registry:\n    'HKLM\\SOFTWARE\\K':\n"
        "      Bin: {type: REG_BINARY, value: 'AAEC'}\n      Multi: [a, b]\n      Big: 5000000000\n"
        "      Exp: {type: REG_EXPAND_SZ, value: '%windir%\\x'}\n")[0]
    v = call(host, op("k", "registry.values", key=r"HKLM\SOFTWARE\K", view="64"))["k"].data["views"]["64"]["values"]
    assert v["Bin"] == {"type": "REG_BINARY", "value": base64.b64encode(b"\x00\x01\x02").decode()}
    assert v["Multi"] == {"type": "REG_MULTI_SZ", "value": ["a", "b"]}
    assert v["Big"]["type"] == "REG_QWORD" and v["Exp"] == {"type": "REG_EXPAND_SZ", "value": "%windir%\\x"}
