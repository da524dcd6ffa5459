"""Faults and limits of the lab server, as the real pywinrm client sees them against Windows."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from tests.test_lab_server_support import ACCOUNT, PASSWORD, EchoHost
from winlab.faults import Faults
from winlab.lab import Lab


def _protocol(url: str, transport: str = "basic", op_timeout: int = 5) -> Protocol:
    return Protocol(url, transport=transport, username=ACCOUNT, password=PASSWORD,  # type: ignore[arg-type]
                    read_timeout_sec=op_timeout + 5, operation_timeout_sec=op_timeout)


def test_receive_long_polls_then_times_out_like_windows() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url, op_timeout=1)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "sleep", ["30"])
        start = time.monotonic()
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell_id, cid)
        assert 0.9 <= time.monotonic() - start < 3
        p.cleanup_command(shell_id, cid)  # terminate: the sleeping process sees its cancel Event
        p.close_shell(shell_id)
        assert lab.open_shells() == 0


def test_receive_returns_as_soon_as_the_process_ends() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url, op_timeout=5)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "sleep", ["0.3"])
        start = time.monotonic()
        assert p.get_command_output_raw(shell_id, cid) == (b"slept\r\n", b"", 0, True)
        assert time.monotonic() - start < 1.5
        p.close_shell(shell_id)


def test_timed_out_fault_shape_matches_windows() -> None:
    with Lab([EchoHost(faults=Faults(receive_timeout=True))]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url, op_timeout=1)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "hostname")
        try:
            p.transport.send_message(_receive_xml(p, shell_id, cid))
        except WinRMTransportError as exc:
            assert exc.code == 500
            assert "w:TimedOut" in exc.response_text and 'Code="2150858793"' in exc.response_text
            assert "within the time specified in OperationTimeout.  " in exc.response_text
        else:
            pytest.fail("expected HTTP 500")
        assert lab.records("HOST01").faults_injected["receive_timeout"] == 1
        p.close_shell(shell_id)


def _receive_xml(p: Protocol, shell_id: str, cid: str) -> str:
    import xmltodict

    req = {"env:Envelope": p.build_wsman_header(
        resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive", shell_id=shell_id)}
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Receive"] = {
        "rsp:DesiredStream": {"@CommandId": cid, "#text": "stdout stderr"}}
    return xmltodict.unparse(req)


def test_quota_fault_and_max_shells_per_user() -> None:
    with Lab([EchoHost(max_shells_per_user=2), EchoHost(name="QUOTA", faults=Faults(quota=True))]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shells = [p.open_shell(), p.open_shell()]
        with pytest.raises(WSManFaultError) as info:
            p.open_shell()
        assert info.value.wmierror_code == 2150859173 and info.value.fault_subcode == "w:QuotaLimit"
        assert "maximum number of 2 concurrent shells" in info.value.response
        p.close_shell(shells[0], close_session=False)
        shells.append(p.open_shell())  # a closed shell frees its slot
        for s in shells[1:]:
            p.close_shell(s, close_session=False)
        q = _protocol(lab.endpoints["QUOTA"].url)
        with pytest.raises(WSManFaultError) as info:
            q.open_shell()
        assert info.value.wmierror_code == 2150859173
        assert lab.records("QUOTA").faults_injected["quota"] == 1 and lab.open_shells() == 0


def test_unknown_shell_gets_invalid_selectors() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        with pytest.raises(WSManFaultError) as info:
            p.run_command("11111111-1111-1111-1111-111111111111", "hostname")
        assert info.value.wsman_fault_code == 2150858843 and info.value.fault_subcode == "w:InvalidSelectors"
        assert info.value.code == 500


def test_idle_shells_expire_and_count_closed() -> None:
    with Lab([EchoHost(idle_timeout_s=0.3)]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        assert lab.open_shells() == 1
        time.sleep(0.45)
        assert lab.open_shells() == 0 and lab.records("HOST01").shells_open == 0
        with pytest.raises(WSManFaultError) as info:
            p.run_command(shell_id, "hostname")
        assert info.value.wsman_fault_code == 2150858843


def test_requested_idle_timeout_is_honoured() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        p.open_shell(idle_timeout="PT0.3S")
        assert lab.open_shells() == 1
        time.sleep(0.45)
        assert lab.open_shells() == 0


def test_ctrl_c_sets_the_cancel_event() -> None:
    import xmltodict

    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "sleep", ["30"])
        with pytest.raises(WinRMOperationTimeoutError):
            _receive_with_short_timeout(p, shell_id, cid)  # the process really is running
        req = {"env:Envelope": p.build_wsman_header(
            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
            action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal", shell_id=shell_id)}
        req["env:Envelope"].setdefault("env:Body", {})["rsp:Signal"] = {
            "@CommandId": cid, "rsp:Code": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"}
        p.send_message(xmltodict.unparse(req))
        assert p.get_command_output_raw(shell_id, cid) == (b"cancelled\r\n", b"", 1, True)
        p.close_shell(shell_id)


def _receive_with_short_timeout(p: Protocol, shell_id: str, cid: str) -> None:
    q = Protocol(p.transport.endpoint, transport="basic", username=ACCOUNT, password=PASSWORD,
                 read_timeout_sec=3, operation_timeout_sec=1)
    q.get_command_output_raw(shell_id, cid)


def test_auth_reject_fault_rejects_good_credentials() -> None:
    with Lab([EchoHost(faults=Faults(auth="reject"))]) as lab:
        for transport in ("basic", "ntlm"):
            with pytest.raises(InvalidCredentialsError):
                _protocol(lab.endpoints["HOST01"].url, transport=transport).open_shell()
        assert lab.records("HOST01").faults_injected["auth_reject"] == 2


def test_connect_refused_and_hang() -> None:
    hosts = [EchoHost(name="REFUSE", faults=Faults(connect="refused")),
             EchoHost(name="HANG", faults=Faults(connect="hang"))]
    with Lab(hosts) as lab:
        ep = lab.endpoints["REFUSE"]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ep.address, ep.port), timeout=2).close()
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(lab.endpoints["HANG"].url, data=b"", timeout=(2, 0.3))
        assert lab.records("HANG").faults_injected["connect_hang"] == 1


def test_latency_is_added_per_response() -> None:
    with Lab([EchoHost(faults=Faults(latency_ms=150))]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        start = time.monotonic()
        p.close_shell(p.open_shell())
        assert time.monotonic() - start >= 0.3


def test_http_500_burst_and_every() -> None:
    with Lab([EchoHost(faults=Faults(http_500_burst=1)), EchoHost(name="EVERY", faults=Faults(http_500_every=2))]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        with pytest.raises(WSManFaultError) as info:
            p.open_shell()
        assert info.value.code == 500 and info.value.fault_subcode == "w:InternalError"
        p.close_shell(p.open_shell())  # the burst is over
        q = _protocol(lab.endpoints["EVERY"].url)
        shell_id = q.open_shell()  # request 1
        with pytest.raises(WSManFaultError):
            q.run_command(shell_id, "hostname")  # request 2
        q.close_shell(shell_id)  # request 3
        assert lab.records("EVERY").faults_injected["http_500"] == 1
        assert lab.records("EVERY").requests["Command"] == 1  # the refused request is counted as what it was


def test_drop_after_mutation_closes_the_connection_once() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "mutate")
        with pytest.raises(requests.exceptions.ConnectionError):
            p.get_command_output(shell_id, cid)
        assert lab.records("HOST01").faults_injected["drop_after_mutation"] == 1
        assert p.get_command_output(shell_id, cid) == (b"changed\r\n", b"", 0)  # the process did run
        p.close_shell(shell_id)


def test_drop_mid_receive() -> None:
    with Lab([EchoHost(faults=Faults(drop_mid_receive=True))]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "hostname")
        with pytest.raises(requests.exceptions.ConnectionError):
            p.get_command_output(shell_id, cid)
        assert lab.records("HOST01").faults_injected["drop_mid_receive"] == 1
        p.close_shell(shell_id)


def test_stop_interrupts_a_hanging_receive() -> None:
    lab = Lab([EchoHost()])
    errors: list[BaseException] = []
    with lab:
        p = _protocol(lab.endpoints["HOST01"].url, op_timeout=30)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "sleep", ["60"])

        def receive() -> None:
            try:
                p.get_command_output_raw(shell_id, cid)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=receive)
        t.start()
        time.sleep(0.2)
        start = time.monotonic()
    assert time.monotonic() - start < 3
    t.join(5)
    assert not t.is_alive() and errors
    assert not [t.name for t in threading.enumerate() if t.name.startswith("winlab-")]  # all joined


def test_another_users_shell_is_access_denied() -> None:
    host = EchoHost(accounts={ACCOUNT: PASSWORD, "LAB\\other": "Other-1"})
    with Lab([host]) as lab:
        url = lab.endpoints["HOST01"].url
        mine = _protocol(url)
        shell_id = mine.open_shell()
        theirs = Protocol(url, transport="basic", username="other@lab", password="Other-1",
                          read_timeout_sec=10, operation_timeout_sec=5)
        with pytest.raises(WSManFaultError) as info:
            theirs.run_command(shell_id, "hostname")
        assert info.value.wsman_fault_code == 5 and info.value.fault_subcode == "w:AccessDenied"
        mine.close_shell(shell_id)
        assert lab.open_shells() == 0
