"""AgentSession against the lab over real HTTP: one round trip per host, check mode, bounded log scans,
non-ASCII text, and every fault mapped to its typed error with no shell left open."""

from __future__ import annotations

import dataclasses
import time

import pytest

from remoting.agent_protocol import op
from remoting.endpoint import Secret, Timeouts
from remoting.errors import (
    AuthRejectedError,
    CertificateError,
    CheckModeViolation,
    CommandTimeoutError,
    InsecureTransportError,
    OutcomeUnknownError,
    QuotaError,
    UnreachableError,
)
from remoting.retry import RetryPolicy
from remoting.session import AgentSession
from tests.test_remoting_support import CLIENT_DLL, WSUS_LOG, endpoint_for, gather_ops, make_hosts
from winlab.lab import Lab

QUICK_RETRY = RetryPolicy(attempts=3, wait_min_s=0.05, wait_max_s=0.1)


def _assert_no_shell_left(lab: Lab, name: str = "WSUS01") -> None:
    assert lab.open_shells() == 0
    assert lab.records(name).shells_open == 0


def test_gathering_every_fact_takes_one_shell_one_process_and_at_most_7_requests() -> None:
    with Lab(make_hosts()) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01")) as s:
            resp = s.run(gather_ops())
        rec = lab.records("WSUS01")
        assert rec.total_requests <= 7, dict(rec.requests)
        assert (rec.shells_opened, rec.processes_started, len(rec.mutations)) == (1, 1, 0)
        assert s.stats.requests == rec.total_requests and s.stats.commands == 1
        _assert_no_shell_left(lab)
    res = resp.by_id()
    assert all(r.ok for r in resp.results), [r for r in resp.results if not r.ok]
    assert res["dll"].data["file_version"] == "3.1.6001.1"  # type: ignore[index]
    assert res["upd"].data["available"] is True  # type: ignore[index]
    assert resp.host["culture"] == "da-DK"
    lines = [m["line"] for m in res["sdlog"].data["files"][-1]["matches"]]  # type: ignore[index]
    # Danish, German and Chinese error text arrives intact (UTF-8 end to end, codepage 65001).
    assert any("tilføjet et element med den samme nøgle" in ln for ln in lines)
    assert any("mit dem gleichen Schlüssel wurde bereits hinzugefügt" in ln for ln in lines)
    assert any("已添加了具有相同键的项。" in ln for ln in lines)
    wsync = res["wsync"].data["files"][-1]  # type: ignore[index]
    assert wsync["path"] == r"C:\SMS\Logs\wsyncmgr.log" and len(wsync["matches"]) == 2


def test_check_mode_refuses_mutating_ops_before_anything_is_sent() -> None:
    with Lab(make_hosts()) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01")) as s:
            before = dict(lab.records("WSUS01").requests)
            with pytest.raises(CheckModeViolation, match="up"):
                s.run([op("ok", "env.expand", text="x"), op("up", "file.upload", path=r"C:\x.msp", data=b"1")])
            assert dict(lab.records("WSUS01").requests) == before  # not one byte left the client
            assert s.run([op("ok", "env.expand", text="%windir%")]).results[0].data == {"value": r"C:\WINDOWS"}
        rec = lab.records("WSUS01")
        assert rec.mutations == [] and rec.processes_started == 1
        _assert_no_shell_left(lab)


def test_mutating_ops_run_once_when_check_mode_is_off() -> None:
    payload = "kbfix upload ✓ æøå".encode() * 100
    with Lab(make_hosts()) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01"), check_mode=False) as s:
            resp = s.run([
                op("u1", "file.upload", path=r"C:\kbfix\pkg.bin", data=payload[:1000], offset=0),
                op("u2", "file.upload", path=r"C:\kbfix\pkg.bin", data=payload[1000:], offset=1000),
                op("chk", "file.info", path=r"C:\kbfix\pkg.bin", sha256=True),
            ])
        res = resp.by_id()
        assert res["u2"].data == {"path": r"C:\kbfix\pkg.bin", "size": len(payload)}
        import hashlib

        assert res["chk"].data["sha256"] == hashlib.sha256(payload).hexdigest()  # type: ignore[index]
        assert [m.op for m in lab.records("WSUS01").mutations] == ["file.upload", "file.upload"]
        _assert_no_shell_left(lab)


@pytest.mark.slow
def test_200_mb_log_with_3_matches_crosses_the_wire_in_under_64_kib() -> None:
    hosts = make_hosts()
    from winlab.generated_logs import GeneratedContent
    from winlab.hoststate import FileEntry

    matches = [
        "2008-07-10 09:14:03.250 UTC Error w3wp.12 ClientImplementation.SyncUpdates System.ArgumentException: nøgle 1",
        "2008-07-11 10:00:00.000 UTC Error w3wp.7 ClientImplementation.SyncUpdates System.ArgumentException: Schlüssel 2",
        "2008-07-12 11:00:00.000 UTC Error w3wp.9 ClientImplementation.SyncUpdates System.ArgumentException: 键 3",
    ]
    big = r"C:\Program Files\Update Services\LogFiles\Big.log"
    hosts[0].state.put_file(FileEntry(path=big, content=GeneratedContent(200, 7, matches)))
    with Lab(hosts) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01")) as s:
            resp = s.run([op("big", "log.scan", path=big, pattern=r"SyncUpdates System\.ArgumentException",
                             context=2)], deadline_s=60)
        rec = lab.records("WSUS01")
        f = resp.results[0].data["files"][0]  # type: ignore[index]
        assert f["size"] > 200 * 1000 * 1000 and f["end_offset"] == f["size"]
        assert [m["line"] for m in f["matches"]] == matches
        assert rec.bytes_out < 64 * 1024, rec.bytes_out  # the answer: bounded matches, never the file
        # What we send is the gzip'd agent (about 15 KB of base64, 20 KB in the Send envelope) plus
        # the request: constant, whatever the log's size, and ~1.3 KB per Receive poll while it runs.
        assert rec.bytes_in < 32 * 1024 + 1400 * rec.requests["Receive"], (rec.bytes_in, dict(rec.requests))
        _assert_no_shell_left(lab)


# ------------------------------------------------------------------------------------ transport


def test_ntlm_over_http_with_message_encryption_reuses_one_authenticated_connection() -> None:
    with Lab(make_hosts()) as lab:
        ep = endpoint_for(lab, "WSUS01", transport="ntlm", allow_unencrypted=False)
        with AgentSession(ep) as s:
            s.run([op("a", "env.expand", text="%windir%")])
            s.run([op("b", "env.expand", text="%ProgramFiles%")])
        rec = lab.records("WSUS01")
        # One NTLM handshake for the whole session's 8 WS-Man requests, not one per request: the
        # Negotiate leg (answered 401) and the Authenticate leg, which carries the sealed Create.
        assert rec.requests["Auth"] == 1 and rec.requests["Command"] == 2 and s.stats.requests == 8
        assert rec.total_requests == 9
        _assert_no_shell_left(lab)


@pytest.mark.parametrize("https", [False, True], ids=["http-sealed", "https"])
def test_ntlm_gathers_in_6_requests_the_create_riding_on_the_authenticate_leg(https: bool) -> None:
    with Lab(make_hosts(), https=https) as lab:
        ep = endpoint_for(lab, "WSUS01", transport="ntlm", allow_unencrypted=False)
        with AgentSession(ep) as s:
            resp = s.run(gather_ops())
        rec = lab.records("WSUS01")
        # pywinrm alone: an empty anonymous POST, Negotiate, Authenticate, then 5 WS-Man requests.
        assert dict(rec.requests) == {"Auth": 1, "Create": 1, "Command": 1, "Send": 1, "Receive": 1, "Delete": 1}
        assert resp.host["computer_name"] == "WSUS01" and s.stats.requests == 5
        _assert_no_shell_left(lab)


def test_ntlm_with_a_wrong_password_is_an_auth_error_and_nothing_runs() -> None:
    with Lab(make_hosts()) as lab:
        ep = endpoint_for(lab, "WSUS01", transport="ntlm", allow_unencrypted=False, password=Secret("wrong"))
        with pytest.raises(AuthRejectedError) as err, AgentSession(ep, retry=QUICK_RETRY):
            pass
        assert "wrong" not in str(err.value)
        rec = lab.records("WSUS01")
        assert rec.requests["Create"] == 0 and rec.shells_opened == 0


def test_https_with_the_lab_ca_works_and_without_it_is_a_certificate_error() -> None:
    with Lab(make_hosts(), https=True) as lab:
        with AgentSession(endpoint_for(lab, "WSUS01")) as s:
            assert s.run([op("a", "env.expand", text="x")]).results[0].ok
        with pytest.raises(CertificateError) as err:
            with AgentSession(endpoint_for(lab, "WSUS01", ca_trust_path=None), retry=QUICK_RETRY):
                pass
        assert err.value.host == "WSUS01" and "certificate" in str(err.value)
        _assert_no_shell_left(lab)


def test_basic_over_plain_http_is_refused_unless_allowed() -> None:
    with Lab(make_hosts()) as lab:
        with pytest.raises(InsecureTransportError, match="Basic"):
            AgentSession(endpoint_for(lab, "WSUS01", allow_unencrypted=False))
        assert lab.records("WSUS01").total_requests == 0


# ---------------------------------------------------------------------------------------- faults


def test_connection_refused_is_unreachable_after_bounded_retries() -> None:
    with Lab(make_hosts(extra="    faults: {connect: refused}")) as lab:
        s = AgentSession(endpoint_for(lab, "WSUS01"), retry=QUICK_RETRY)
        with pytest.raises(UnreachableError, match="refused") as err:
            s.__enter__()
        assert err.value.host == "WSUS01" and s.stats.retries == 2
        _assert_no_shell_left(lab)


def test_hanging_listener_is_unreachable_within_the_read_timeout() -> None:
    with Lab(make_hosts(extra="    faults: {connect: hang}")) as lab:
        ep = endpoint_for(lab, "WSUS01", timeouts=Timeouts(connect=1, operation=1, read=2, command=5))
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="did not answer"):
            with AgentSession(ep, retry=QUICK_RETRY):
                pass
        assert time.monotonic() - started < 5  # a read timeout is not retried
        _assert_no_shell_left(lab)


def test_rejected_credentials_are_an_auth_error_without_the_password() -> None:
    with Lab(make_hosts()) as lab:
        ep = endpoint_for(lab, "WSUS01", password=Secret("wrong-Secret-42"))
        with pytest.raises(AuthRejectedError) as err:
            with AgentSession(ep, retry=QUICK_RETRY):
                pass
        assert "wrong-Secret-42" not in str(err.value) and "wrong-Secret-42" not in repr(ep)
        assert lab.records("WSUS01").requests["Create"] == 0
        _assert_no_shell_left(lab)


def test_auth_reject_fault_is_an_auth_error() -> None:
    with Lab(make_hosts(extra="    faults: {auth: reject}")) as lab:
        with pytest.raises(AuthRejectedError):
            with AgentSession(endpoint_for(lab, "WSUS01"), retry=QUICK_RETRY):
                pass
        _assert_no_shell_left(lab)


# The lean NTLM path authenticates with the first real message: faults on that message and
# re-authentication after a dropped connection must behave as with Basic.
_TRANSPORTS = pytest.mark.parametrize("transport", ["basic", "ntlm"], ids=["basic", "ntlm-sealed"])


def _ep(lab: Lab, transport: str):  # type: ignore[no-untyped-def]
    return endpoint_for(lab, "WSUS01", transport=transport, allow_unencrypted=transport == "basic")


@_TRANSPORTS
def test_one_http_500_on_create_is_retried_and_a_burst_is_unreachable(transport: str) -> None:
    with Lab(make_hosts(extra="    faults: {http_500_burst: 1}")) as lab:
        with AgentSession(_ep(lab, transport), retry=QUICK_RETRY) as s:
            assert s.run([op("a", "env.expand", text="x")]).results[0].ok
        assert s.stats.retries == 1
        _assert_no_shell_left(lab)
    with Lab(make_hosts(extra="    faults: {http_500_burst: 10}")) as lab:
        with pytest.raises(UnreachableError, match="HTTP 500") as err:
            with AgentSession(_ep(lab, transport), retry=QUICK_RETRY):
                pass
        assert err.value.fault_code == 2147500037  # E_FAIL in the WSManFault detail
        assert lab.records("WSUS01").faults_injected["http_500"] == 3  # 3 attempts, then stop
        _assert_no_shell_left(lab)


def test_receive_timeouts_are_polled_until_the_command_deadline_then_stopped() -> None:
    with Lab(make_hosts(extra="    faults: {receive_timeout: true}")) as lab:
        ep = endpoint_for(lab, "WSUS01", timeouts=Timeouts(connect=1, operation=1, read=3, command=2))
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError, match="2 s"):
            with AgentSession(ep, retry=QUICK_RETRY) as s:
                s.run([op("a", "env.expand", text="x")])
        assert time.monotonic() - started < 6
        rec = lab.records("WSUS01")
        assert rec.requests["Receive"] >= 2 and rec.requests["Signal"] == 1
        _assert_no_shell_left(lab)


def test_hung_agent_is_signalled_and_the_shell_deleted() -> None:
    with Lab(make_hosts(extra="    faults: {hang_command: true}")) as lab:
        ep = endpoint_for(lab, "WSUS01", timeouts=Timeouts(connect=1, operation=1, read=3, command=20))
        with pytest.raises(CommandTimeoutError):
            with AgentSession(ep) as s:
                s.run([op("a", "env.expand", text="x")], deadline_s=1.5)
        assert lab.records("WSUS01").requests["Signal"] == 1
        _assert_no_shell_left(lab)


@_TRANSPORTS
def test_connection_dropped_after_a_mutating_op_is_outcome_unknown_and_never_resent(transport: str) -> None:
    with Lab(make_hosts(extra="    faults: {drop_after_mutation: true}")) as lab:
        with pytest.raises(OutcomeUnknownError) as err:
            with AgentSession(_ep(lab, transport), check_mode=False, retry=QUICK_RETRY) as s:
                s.run([op("v", "file.info", path=CLIENT_DLL),
                       op("up", "file.upload", path=r"C:\kbfix\KB954960.msp", data=b"MSP", offset=0)])
        assert err.value.op_ids == ("up",) and err.value.kind == "unknown"
        rec = lab.records("WSUS01")
        assert [m.op for m in rec.mutations] == ["file.upload"]  # ran exactly once
        assert rec.requests["Command"] == 1 and rec.processes_started == 1  # never re-sent
        _assert_no_shell_left(lab)


@_TRANSPORTS
def test_connection_dropped_during_a_read_only_run_is_retried(transport: str) -> None:
    with Lab(make_hosts(extra="    faults: {drop_mid_receive: true}")) as lab:
        with AgentSession(_ep(lab, transport), retry=QUICK_RETRY) as s:
            resp = s.run([op("log", "log.scan", path=WSUS_LOG, pattern="InternalServerError")])
        assert len(resp.results[0].data["files"][0]["matches"]) == 1  # type: ignore[index]
        assert s.stats.retries == 1 and lab.records("WSUS01").processes_started == 2
        _assert_no_shell_left(lab)


def test_shell_quota_is_a_quota_error_and_not_retried() -> None:
    with Lab(make_hosts(extra="    faults: {quota: true}")) as lab:
        with pytest.raises(QuotaError) as err:
            with AgentSession(endpoint_for(lab, "WSUS01"), retry=QUICK_RETRY):
                pass
        assert err.value.fault_code == 2150859173 and err.value.hresult == "0x803381A5"
        assert lab.records("WSUS01").requests["Create"] == 1
        _assert_no_shell_left(lab)


def test_ctrl_c_inside_the_session_still_deletes_the_shell() -> None:
    with Lab(make_hosts()) as lab:
        with pytest.raises(KeyboardInterrupt):
            with AgentSession(endpoint_for(lab, "WSUS01")) as s:
                s.run([op("a", "env.expand", text="x")])
                raise KeyboardInterrupt
        assert lab.records("WSUS01").requests["Delete"] == 1
        _assert_no_shell_left(lab)


def test_check_mode_violation_needs_no_connection_at_all() -> None:
    # A closed port: any connection attempt would fail as UnreachableError instead.
    with Lab(make_hosts()) as lab:
        ep = dataclasses.replace(endpoint_for(lab, "WSUS01"), port=1)
    s = AgentSession(ep)
    with pytest.raises(CheckModeViolation):
        s.run([op("r", "service.restart", name="W3SVC")])
    assert s.stats.requests == 0


def test_every_demo_host_gathers_over_ntlm_https_in_one_process_and_at_most_7_requests() -> None:
    from winlab.faults import Faults
    from winlab.fixtures import demo_site

    hosts = [h for h in demo_site() if h.faults == Faults()]  # the refused/locked demo hosts have their own tests
    assert len(hosts) >= 5
    with Lab(hosts, https=True) as lab:
        for h in hosts:
            user, password = next(iter(h.accounts.items()))
            ep = endpoint_for(lab, h.name, transport="ntlm", username=user, password=Secret(password))
            with AgentSession(ep) as s:
                resp = s.run(gather_ops())
            rec = lab.records(h.name)
            # NTLM costs 2 handshake legs on the first request; the other 5 are Create, Command,
            # Send, Receive, Delete (HTTPS: no separate sealing handshake).
            assert rec.total_requests <= 7, (h.name, dict(rec.requests))
            assert (rec.shells_opened, rec.processes_started, rec.shells_open) == (1, 1, 0)
            assert resp.host["computer_name"] == h.name.upper()
            failed = {r.id: r.error.kind for r in resp.results if not r.ok and r.error}
            # Only references to a product the host lacks may fail (e.g. no ConfigMgr on a WSUS box).
            assert set(failed.values()) <= {"not_found"}, (h.name, failed)


def test_ctrl_c_while_the_agent_runs_signals_it_and_deletes_the_shell() -> None:
    import _thread
    import threading

    with Lab(make_hosts(extra="    faults: {hang_command: true}")) as lab:
        ep = endpoint_for(lab, "WSUS01", timeouts=Timeouts(connect=1, operation=1, read=3, command=20))
        timer = threading.Timer(0.5, _thread.interrupt_main)  # what Ctrl-C does to the main thread
        with pytest.raises(KeyboardInterrupt):
            with AgentSession(ep) as s:
                timer.start()
                s.run([op("a", "env.expand", text="x")])
        timer.join()
        rec = lab.records("WSUS01")
        assert rec.requests["Signal"] == 1 and rec.requests["Delete"] == 1
        _assert_no_shell_left(lab)


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_environment_proxies_and_ca_bundles_are_never_read(transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # remoting.lean_http builds the session with trust_env off: a proxy in the environment (here a
    # dead one) must not capture WinRM traffic, nor a CA bundle variable change what is trusted.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    with Lab(make_hosts()) as lab:
        with AgentSession(_ep(lab, transport)) as s:
            assert s.run([op("a", "env.expand", text="%windir%")]).results[0].ok
        _assert_no_shell_left(lab)


def test_https_channel_binding_is_the_one_requests_ntlm_computes() -> None:
    # NTLM over HTTPS carries tls-server-end-point channel bindings (RFC 5929) in the
    # Authenticate token; lean_http computes them itself since it sends the NTLM legs.
    import requests
    from requests_ntlm import HttpNtlmAuth

    from remoting.lean_http import LeanSender

    with Lab(make_hosts(), https=True) as lab:
        le = lab.endpoints["WSUS01"]
        with requests.Session() as session:
            session.trust_env = False
            response = session.post(le.url, data=b"", stream=True, verify=str(le.ca_path))
            ours = LeanSender._channel_bindings(response)
            theirs = HttpNtlmAuth("u", "p")._get_server_cert(response)
            response.close()
    assert ours is not None and theirs is not None
    assert ours.application_data == b"tls-server-end-point:" + theirs
