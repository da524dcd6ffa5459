"""The lab server with the real `EmulatedHost` (winlab.host, loaded through winlab.fixtures)."""

from __future__ import annotations

import pytest
from winrm.protocol import Protocol

from winlab.lab import Lab

FIXTURE = """
hosts:
  - name: WSUS01
    os: {version: 5.2.3790, arch: x64, culture: en-US}
    accounts: {'CORP\\kbfix': 'Secret-1'}
"""


def test_emulated_host_answers_an_unknown_command_like_cmd_exe() -> None:
    pytest.importorskip("winlab.host")
    from winlab.fixtures import load_host_fixture_text

    hosts = load_host_fixture_text(FIXTURE, "inline")
    with Lab(hosts) as lab:
        p = Protocol(lab.endpoints["WSUS01"].url, transport="ntlm", username="CORP\\kbfix", password="Secret-1",
                     read_timeout_sec=30, operation_timeout_sec=20)
        shell_id = p.open_shell(codepage=437)
        command_id = p.run_command(shell_id, "ipconfig", ["/all"])
        out, err, code = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)
        assert (out, code) == (b"", 9009)
        assert b"'ipconfig' is not recognized as an internal or external command" in err
        rec = lab.records("WSUS01")
        assert rec.shells_opened == 1 and rec.shells_open == 0 and rec.requests["Receive"] >= 1
