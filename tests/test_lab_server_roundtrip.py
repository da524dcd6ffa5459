"""The lab's WS-Management server through HTTP with the real pywinrm `Protocol` (Basic, NTLM, HTTPS)."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from winrm.exceptions import InvalidCredentialsError
from winrm.protocol import Protocol

from tests.test_lab_server_support import ACCOUNT, PASSWORD, EchoHost
from winlab.lab import Lab


def _protocol(url: str, transport: str = "basic", password: str = PASSWORD, **kw: object) -> Protocol:
    return Protocol(url, transport=transport, username=ACCOUNT, password=password,  # type: ignore[arg-type]
                    read_timeout_sec=10, operation_timeout_sec=5, **kw)  # type: ignore[arg-type]


def _round_trip(p: Protocol) -> tuple[bytes, bytes, int]:
    shell_id = p.open_shell(codepage=65001, env_vars={"KBFIX_LAB": "yes"})
    command_id = p.run_command(shell_id, "more")
    p.send_command_input(shell_id, command_id, b"first ", end=False)
    p.send_command_input(shell_id, command_id, b"second", end=True)
    result = p.get_command_output(shell_id, command_id)
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)
    return result


def test_basic_http_round_trip_all_six_actions() -> None:
    host = EchoHost()
    with Lab([host]) as lab:
        ep = lab.endpoints["HOST01"]
        assert ep.scheme == "http" and ep.url == f"http://127.0.0.1:{ep.port}/wsman" and ep.ca_path is None
        p = _protocol(ep.url)
        assert _round_trip(p) == (b"first second", b"", 0)
        command, _args, stdin, env, codepage = host.calls[0]
        assert (command, stdin, env, codepage) == ("more", b"first second", {"KBFIX_LAB": "yes"}, 65001)
        rec = lab.records("HOST01")
        assert dict(rec.requests) == {"Create": 1, "Command": 1, "Send": 2, "Receive": 1, "Signal": 1, "Delete": 1}
        assert (rec.shells_opened, rec.shells_open, rec.processes_started) == (1, 0, 1)
        assert rec.bytes_in > 0 and rec.bytes_out > 0
        assert lab.open_shells() == 0
        assert "TOTAL" in lab.summary() and "HOST01" in lab.summary()


def test_command_arguments_stderr_and_exit_code() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "echo", ["hello", "world"])
        assert p.get_command_output(shell_id, cid) == (b"hello world\r\n", b"", 0)
        cid = p.run_command(shell_id, "fail")
        assert p.get_command_output(shell_id, cid) == (b"", b"it failed\r\n", 3)
        cid = p.run_command(shell_id, "nosuch.exe")
        _out, err, code = p.get_command_output(shell_id, cid)
        assert code == 1 and b"is not recognized" in err
        p.close_shell(shell_id)


def test_large_output_is_split_to_fit_the_envelope() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        shell_id = p.open_shell()
        cid = p.run_command(shell_id, "big", ["400000"])
        out, _err, code = p.get_command_output(shell_id, cid)
        assert out == b"x" * 400000 and code == 0
        assert lab.records("HOST01").requests["Receive"] >= 3  # 153600-byte envelopes cannot carry it at once
        p.close_shell(shell_id)


def test_ntlm_with_message_encryption_over_http() -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url, transport="ntlm")
        assert _round_trip(p) == (b"first second", b"", 0)
        rec = lab.records("HOST01")
        assert rec.requests["Auth"] >= 2  # the 401 legs of the handshake
        assert p.transport.encryption is not None  # pywinrm really sealed the messages


def test_ntlm_sealed_body_is_not_plain_text() -> None:
    with Lab([EchoHost()]) as lab:
        url = lab.endpoints["HOST01"].url
        p = _protocol(url, transport="ntlm")
        p.open_shell()
        session = p.transport.session
        assert session is not None
        body = p.transport.encryption.prepare_encrypted_request(session, url, b"<x/>").body  # type: ignore[union-attr]
        assert b"application/HTTP-SPNEGO-session-encrypted" in body and b"<x/>" not in body


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_wrong_password_raises_invalid_credentials(transport: str) -> None:
    with Lab([EchoHost()]) as lab:
        p = _protocol(lab.endpoints["HOST01"].url, transport=transport, password="wrong")
        with pytest.raises(InvalidCredentialsError):
            p.open_shell()
        assert lab.records("HOST01").requests["Auth"] >= 1
        assert lab.records("HOST01").shells_opened == 0


def test_401_lists_negotiate_and_basic_like_windows() -> None:
    with Lab([EchoHost()]) as lab:
        r = requests.post(lab.endpoints["HOST01"].url, data=b"<x/>", timeout=5)
        assert r.status_code == 401
        assert r.raw.headers.getlist("WWW-Authenticate") == ["Negotiate", 'Basic realm="WSMAN"']
        assert r.headers["Server"] == "Microsoft-HTTPAPI/2.0"


def test_basic_over_https_validates_against_the_lab_ca(tmp_path: Path) -> None:
    with Lab([EchoHost()], https=True, workdir=tmp_path) as lab:
        ep = lab.endpoints["HOST01"]
        assert ep.scheme == "https" and ep.ca_path is not None and ep.ca_path.is_file()
        p = _protocol(ep.url, transport="ssl", ca_trust_path=str(ep.ca_path), server_cert_validation="validate")
        assert _round_trip(p) == (b"first second", b"", 0)
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(ep.url, data=b"", timeout=5)  # the system trust store does not know the lab CA


def test_distinct_addresses_and_inventory(tmp_path: Path) -> None:
    hosts = [EchoHost(name="WSUS01"), EchoHost(name="SCCM01")]
    with Lab(hosts, distinct_addresses=True) as lab:
        addresses = {ep.address for ep in lab.endpoints.values()}
        assert len(addresses) == 2 and all(a.startswith("127.") and a != "127.0.0.1" for a in addresses)
        inv = lab.write_inventory(tmp_path / "inv.yaml", transport="basic")
        doc = yaml.safe_load(inv.read_text())
        assert doc["kbfix_inventory"] == 1
        assert doc["defaults"]["username"] == ACCOUNT and doc["defaults"]["password"] == PASSWORD
        assert doc["defaults"]["allow_unencrypted"] is True and doc["defaults"]["scheme"] == "http"
        assert doc["groups"]["lab"]["hosts"] == ["WSUS01", "SCCM01"]
        for name, entry in doc["hosts"].items():
            ep = lab.endpoints[name]
            assert entry == {"address": ep.address, "port": ep.port}
            p = _protocol(f"http://{entry['address']}:{entry['port']}/wsman")
            shell_id = p.open_shell()
            cid = p.run_command(shell_id, "hostname")
            assert p.get_command_output(shell_id, cid)[0] == name.encode() + b"\r\n"
            p.close_shell(shell_id)


def test_https_inventory_names_the_ca(tmp_path: Path) -> None:
    with Lab([EchoHost()], https=True, workdir=tmp_path / "lab") as lab:
        doc = yaml.safe_load(lab.write_inventory(tmp_path / "inv.yaml").read_text())
        assert doc["defaults"]["scheme"] == "https" and doc["defaults"]["transport"] == "ntlm"
        assert Path(doc["defaults"]["ca_trust_path"]) == (tmp_path / "lab" / "ca.pem").resolve()
        assert doc["defaults"]["allow_unencrypted"] is False


def test_round_trip_is_fast_and_stop_closes_everything() -> None:
    lab = Lab([EchoHost()])
    with lab:
        p = _protocol(lab.endpoints["HOST01"].url)
        _round_trip(p)  # warm the connection
        start = time.perf_counter()
        _round_trip(p)
        elapsed = time.perf_counter() - start
        shell_id = p.open_shell()  # left open on purpose
        assert lab.open_shells() == 1
    assert elapsed < 0.2  # ~10 ms expected; a Nagle stall would cost ~37 ms per request (7 requests)
    assert lab.records("HOST01").shells_open == 0 and shell_id
    assert lab.server.open_connections() == 0
    assert not [t.name for t in threading.enumerate() if t.name.startswith("winlab-")]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(lab.endpoints["HOST01"].url, data=b"", timeout=2)


def test_raw_basic_request_gets_soap_answer() -> None:
    with Lab([EchoHost()]) as lab:
        token = base64.b64encode(f"{ACCOUNT}:{PASSWORD}".encode()).decode()
        r = requests.post(lab.endpoints["HOST01"].url, data=b"<not xml", timeout=5,
                          headers={"Authorization": f"Basic {token}", "Content-Type": "application/soap+xml;charset=UTF-8"})
        assert r.status_code == 400 and b"w:SchemaValidationError" in r.content and b"2150858817" in r.content


def test_ntlm_over_https_without_sealing(tmp_path: Path) -> None:
    with Lab([EchoHost()], https=True, workdir=tmp_path) as lab:
        ep = lab.endpoints["HOST01"]
        p = _protocol(ep.url, transport="ntlm", ca_trust_path=str(ep.ca_path))
        assert _round_trip(p) == (b"first second", b"", 0)
        assert p.transport.encryption is None  # TLS protects the messages; pywinrm does not seal over https


def test_spnego_wrapped_negotiate_client() -> None:
    import spnego

    with Lab([EchoHost()]) as lab:
        url = lab.endpoints["HOST01"].url
        client = spnego.client(ACCOUNT, PASSWORD, protocol="negotiate", options=spnego.NegotiateOptions.use_ntlm)
        with requests.Session() as s:
            token = client.step()
            r = s.post(url, data=b"", headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()},
                       timeout=5)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Negotiate ")
            token = client.step(base64.b64decode(r.headers["WWW-Authenticate"].split(" ", 1)[1]))
            r = s.post(url, data=b"", headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()},
                       timeout=5)
            assert r.status_code == 200
            final = r.headers.get("WWW-Authenticate")
            if final:  # SPNEGO's mechListMIC completes the client side
                client.step(base64.b64decode(final.split(" ", 1)[1]))
            assert client.complete
            sealed = client.wrap(b"ping", encrypt=True).data
            assert sealed[16:] != b"ping"


def test_ntlm_keeps_working_when_labs_stop_out_of_order() -> None:
    first = Lab([EchoHost(name="FIRST")])
    second = Lab([EchoHost(name="SECOND", accounts={"OTHER\\ops": "Pw-2"})])
    first.start()
    second.start()
    try:
        first.stop()  # not LIFO: the second lab's NTLM logons must still work
        url = second.endpoints["SECOND"].url
        p = Protocol(url, transport="ntlm", username="OTHER\\ops", password="Pw-2", read_timeout_sec=10,
                     operation_timeout_sec=5)
        p.close_shell(p.open_shell())
    finally:
        second.stop()


@pytest.mark.parametrize("username", ["LAB\\kbfix", "lab\\KBFIX", "kbfix@LAB", "kbfix"])
def test_ntlm_accepts_the_logon_name_forms(username: str) -> None:
    with Lab([EchoHost()]) as lab:
        p = Protocol(lab.endpoints["HOST01"].url, transport="ntlm", username=username, password=PASSWORD,
                     read_timeout_sec=10, operation_timeout_sec=5)
        p.close_shell(p.open_shell())
        assert lab.records("HOST01").shells_opened == 1


def test_ntlm_rejects_another_domain() -> None:
    with Lab([EchoHost()]) as lab:
        p = Protocol(lab.endpoints["HOST01"].url, transport="ntlm", username="EVIL\\kbfix", password=PASSWORD,
                     read_timeout_sec=10, operation_timeout_sec=5)
        with pytest.raises(InvalidCredentialsError):
            p.open_shell()
