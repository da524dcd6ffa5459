"""The naive peer's PowerShell probes, answered by the emulated host as pywinrm's run_ps sends them."""

from __future__ import annotations

import base64
import threading

import winrm

from winlab.fixtures import demo_site
from winlab.host import EmulatedHost
from winlab.hoststate import OsInfo
from winlab.naive_probes import (
    WSUS_DLL,
    WSUS_LOG,
    file_version_script,
    naive_scripts,
    products_script,
    registry_value_script,
    select_string_script,
    service_status_script,
)


def run_ps(host: EmulatedHost, script: str, codepage: int = 437) -> tuple[int, str, str]:
    """What `winrm.Session.run_ps` does: `powershell -encodedcommand <b64 UTF-16LE>` as one command
    string, then stderr through pywinrm's own CLIXML cleaner."""
    encoded = base64.b64encode(script.encode("utf_16_le")).decode("ascii")
    res = host.execute(f"powershell -encodedcommand {encoded}", [], b"", {}, codepage, threading.Event())
    session = winrm.Session("127.0.0.1", auth=("u", "p"))
    err = session._clean_error_msg(res.stderr) if res.stderr else b""
    return res.exit_code, res.stdout.decode("utf-8" if codepage == 65001 else f"cp{codepage}"), err.decode("utf-8")


def test_naive_check_of_an_unpatched_wsus_server() -> None:
    host = {h.name: h for h in demo_site()}["WSUS-SP1"]
    before = host.records.processes_started
    out = [run_ps(host, s) for s in naive_scripts()]
    assert out[0] == (0, "3.1.6001.65\r\n", "")
    assert out[1] == (0, "3.1.6001.65\r\n", "")
    code, text, _ = out[2]
    lines = text.splitlines()
    assert code == 0 and len(lines) == 2 and all("System.ArgumentException" in ln for ln in lines)
    assert out[3] == (0, "", "")  # KB954960 has no Uninstall entry
    assert out[4] == (0, "Running\r\n", "")
    assert host.records.processes_started == before + 5


def test_errors_come_back_as_powershell_errors() -> None:
    host = {h.name: h for h in demo_site()}["HEALTHY-CL02"]
    code, out, err = run_ps(host, registry_value_script(r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup", "VersionString"))
    assert code == 1 and out == ""
    assert err == "Get-ItemProperty : Cannot find path 'HKLM:\\SOFTWARE\\Microsoft\\Update Services\\Server\\Setup' because it does not exist."
    code, _, err = run_ps(host, file_version_script(WSUS_DLL))
    assert code == 1 and err.startswith("Get-Item : Cannot find path")
    code, _, err = run_ps(host, select_string_script(WSUS_LOG, "x"))
    assert code == 1 and err.startswith("Select-String : Cannot find path")
    code, _, err = run_ps(host, service_status_script("WsusService"))
    assert code == 1 and "Cannot find any service with service name 'WsusService'" in err
    code, _, err = run_ps(host, "Get-Process | Stop-Process")
    assert code == 1 and "not one it can run" in err


def test_naive_product_probe_misses_the_32_bit_view() -> None:
    """A 64-bit PowerShell reading Uninstall\\* sees only native entries: the ConfigMgr hotfix
    (a 32-bit product, under Wow6432Node) is invisible to the naive peer."""
    host = {h.name: h for h in demo_site()}["CM07-OK"]
    assert run_ps(host, products_script("*KB954474*")) == (0, "", "")
    x86 = {h.name: h for h in demo_site()}["WSUS-RTM"]
    assert run_ps(x86, products_script("*Update Services*"))[1] == "Microsoft Windows Server Update Services 3.0\r\n"


def test_console_codepage_decides_non_ascii_output() -> None:
    host = {h.name: h for h in demo_site()}["WSUS-DK"]
    script = select_string_script(WSUS_LOG, "tilføjet")
    # Server 2003 (NT 5.2) fails on 65001: the command returns nothing and runs nothing (WinRb/WinRM #232)
    assert run_ps(host, script, 65001) == (0, "", "")
    host.state.os = OsInfo("6.1.7601", "x86", "da-DK")  # the same host on 2008 R2 reads a UTF-8 console
    _, text437, _ = run_ps(host, script, 437)
    _, text_utf8, _ = run_ps(host, script, 65001)
    assert "tilføjet" in text_utf8 and "tilføjet" not in text437 and "Key" not in text_utf8
    assert len(text_utf8.splitlines()) == 2
    assert registry_value_script("HKLM\\SOFTWARE\\It's", "v").count("''") == 1  # quotes are escaped


def test_naive_probes_through_http_with_pywinrm_run_ps() -> None:
    """The same probes over the lab's WS-Man server with the unmodified pywinrm Session (NTLM)."""
    from winlab.lab import Lab

    hosts = [h for h in demo_site() if h.name in ("WSUS-SP1", "WSUS-DK")]
    with Lab(hosts) as lab:
        for host in hosts:
            ep = lab.endpoints[host.name]
            session = winrm.Session(ep.url, auth=("LAB\\kbfix", "Secret-1"), transport="ntlm",
                                    operation_timeout_sec=10, read_timeout_sec=15)
            results = [session.run_ps(s) for s in naive_scripts()]
            assert results[0].status_code == 0 and results[0].std_out == b"3.1.6001.65\r\n"
            assert results[2].std_out.count(b"System.ArgumentException") == 2
            missing = session.run_ps(file_version_script(r"C:\nope.dll"))
            assert missing.status_code == 1 and missing.std_err.startswith(b"Get-Item : Cannot find path")
            assert host.records.processes_started == 6 and host.records.shells_open == 0
