"""Hostile and malformed input to the lab server: SOAP faults, never a crash, never a leaked shell.

Raw bytes go over HTTP with `requests`/`socket`; envelopes start from the real pywinrm requests in
../shared/realdata/winrm (see SOURCES.md there).
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REALDATA
from tests.test_lab_server_support import ACCOUNT, PASSWORD, EchoHost
from winlab.lab import Lab

REALDATA_WINRM = (REALDATA or Path("/nonexistent")) / "winrm"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{ACCOUNT}:{PASSWORD}".encode()).decode(),
        "Content-Type": "application/soap+xml;charset=UTF-8"}
NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"}

# Minimal stand-ins when ../shared is not beside the project (the shape pywinrm sends).
_CREATE = (
    '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
    "<env:Header><w:MaxEnvelopeSize>153600</w:MaxEnvelopeSize><a:MessageID>uuid:11111111-1111-1111-1111-111111111111</a:MessageID>"
    "<w:OperationTimeout>PT60S</w:OperationTimeout><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>"
    "<a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action></env:Header>"
    "<env:Body><rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams></rsp:Shell></env:Body></env:Envelope>"
)


def _sample(name: str, fallback: str) -> bytes:
    path = REALDATA_WINRM / name
    return path.read_bytes() if path.is_file() else fallback.encode()


def _with_timeout(envelope: bytes, seconds: int = 1) -> bytes:
    """Shorten OperationTimeout so a mutated Receive cannot long-poll for a minute."""
    return re.sub(rb"<w:OperationTimeout>[^<]*</w:OperationTimeout>", b"<w:OperationTimeout>PT%dS</w:OperationTimeout>" % seconds, envelope)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab([EchoHost(max_envelope_kb=150)]) as running:
        yield running


def _post(lab: Lab, data: bytes, **headers: str) -> requests.Response:
    return requests.post(lab.endpoints["HOST01"].url, data=data, headers={**AUTH, **headers}, timeout=10)


def _fault_code(resp: requests.Response) -> tuple[str, str]:
    root = SafeET.fromstring(resp.content)
    sub = root.find("s:Body/s:Fault/s:Code/s:Subcode/s:Value", NS)
    detail = root.find("s:Body/s:Fault/s:Detail/f:WSManFault", NS)
    return (sub.text if sub is not None else "") or "", detail.get("Code", "") if detail is not None else ""


def _still_serving(lab: Lab) -> None:
    create = _with_timeout(_sample("pywinrm_open_shell_request.xml", _CREATE))
    resp = _post(lab, create)
    assert resp.status_code == 200, resp.content[:300]
    shell_id = re.search(rb'Name="ShellId">([^<]+)<', resp.content)
    assert shell_id
    delete = _delete_for(shell_id.group(1))
    assert _post(lab, delete).status_code == 200


def _delete_for(shell_id: bytes) -> bytes:
    return (
        b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        b'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><env:Header>'
        b"<a:MessageID>uuid:22222222-1111-1111-1111-111111111111</a:MessageID>"
        b"<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>"
        b"<a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete</a:Action>"
        b'<w:SelectorSet><w:Selector Name="ShellId">' + shell_id + b"</w:Selector></w:SelectorSet>"
        b"</env:Header><env:Body/></env:Envelope>"
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>&lol3;</env:Body></env:Envelope>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>&xxe;</env:Body></env:Envelope>"""


@pytest.mark.parametrize("body", [
    b"<not xml", b"\xff\xfe\x00garbage", BILLION_LAUGHS, EXTERNAL_ENTITY,
    b'<Envelope xmlns="urn:wrong"><Header/><Body/></Envelope>',
    b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body/></env:Envelope>',
    _CREATE.replace("<a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action>", "").encode(),
    _CREATE.replace("PT60S", "forever").encode(),
], ids=["truncated", "binary", "entity-bomb", "external-entity", "wrong-namespace", "no-header", "no-action",
        "bad-duration"])
def test_malformed_envelopes_get_schema_validation_faults(lab: Lab, body: bytes) -> None:
    resp = _post(lab, body)
    assert resp.status_code == 400
    assert _fault_code(resp) == ("w:SchemaValidationError", "2150858817")
    assert b"root:" not in resp.content  # nothing from /etc/passwd
    _still_serving(lab)


def test_oversize_envelope_gets_encoding_limit_fault(lab: Lab) -> None:
    big = _CREATE.replace("<rsp:InputStreams>", "<rsp:InputStreams>" + "x" * (150 * 1024)).encode()
    resp = _post(lab, big)
    assert resp.status_code == 500 and _fault_code(resp) == ("w:EncodingLimit", "2150858824")
    _still_serving(lab)


def test_unknown_action_and_resource(lab: Lab) -> None:
    body = _CREATE.replace("transfer/Create", "transfer/Get").encode()
    resp = _post(lab, body)
    assert resp.status_code == 500 and _fault_code(resp) == ("a:ActionNotSupported", "2150858771")


def test_http_level_garbage_keeps_the_server_alive(lab: Lab) -> None:
    url = lab.endpoints["HOST01"].url
    assert requests.get(url, timeout=5).status_code == 405
    assert requests.post(url.replace("/wsman", "/other"), data=b"", headers=AUTH, timeout=5).status_code == 404
    ep = lab.endpoints["HOST01"]
    for raw in (b"\x16\x03\x01garbage\r\n\r\n", b"POST /wsman HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /wsman HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
                b"POST /wsman HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"\r\n" * 10):
        with socket.create_connection((ep.address, ep.port), timeout=5) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(65536)
            assert reply == b"" or reply.startswith(b"HTTP/1.")
    _still_serving(lab)


def test_realdata_requests_round_trip(lab: Lab, realdata: Path) -> None:
    create = _with_timeout((realdata / "winrm" / "pywinrm_open_shell_request.xml").read_bytes())
    resp = _post(lab, create)
    assert resp.status_code == 200 and b"x:ResourceCreated" in resp.content
    shell_id = re.search(rb'Name="ShellId">([^<]+)<', resp.content).group(1)  # type: ignore[union-attr]
    command = (realdata / "winrm" / "pywinrm_run_cmd_wo_args_request.xml").read_bytes()
    command = command.replace(b"11111111-1111-1111-1111-111111111113", shell_id)
    resp = _post(lab, command)
    assert resp.status_code == 200 and b"<rsp:CommandId>" in resp.content
    close = (realdata / "winrm" / "pywinrm_close_shell_request.xml").read_bytes()
    resp = _post(lab, close.replace(b"11111111-1111-1111-1111-111111111113", shell_id))
    assert resp.status_code == 200 and b"<a:RelatesTo>uuid:11111111-1111-1111-1111-111111111111</a:RelatesTo>" in resp.content


TEMPLATES = [
    _with_timeout(_sample("pywinrm_open_shell_request.xml", _CREATE)),
    _with_timeout(_sample("pywinrm_run_cmd_with_args_request.xml", _CREATE)),
    _with_timeout(_sample("pywinrm_receive_request.xml", _CREATE)),
    _with_timeout(_sample("pywinrm_signal_terminate_request.xml", _CREATE)),
    _with_timeout(_sample("pywinrm_close_shell_request.xml", _CREATE)),
]


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from([b"<", b">", b"&", b"&lol;", b"]]>", b"<!DOCTYPE x>", b'"',
                                                  b"\x00", "é".encode(), b"<a:Action>x</a:Action>"]))
        elif kind == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            chunk = bytes(data[pos : pos + draw(st.integers(1, 200))])
            data[pos:pos] = chunk
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=2000), mutated_envelopes()))
def test_random_and_mutated_envelopes_never_crash_or_leak(lab: Lab, body: bytes) -> None:
    before = lab.records("HOST01").shells_opened
    resp = _post(lab, body)
    if not body:  # an authenticated empty POST (pywinrm's NTLM context set-up) is answered 200, empty
        assert (resp.status_code, resp.content) == (200, b"")
        return
    assert resp.status_code in (200, 400, 500)
    root = SafeET.fromstring(resp.content)  # always a well-formed SOAP envelope
    assert root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    created = re.search(rb'Name="ShellId">([^<]+)<', resp.content)
    if created:
        assert _post(lab, _delete_for(created.group(1))).status_code == 200
    assert lab.records("HOST01").shells_opened - before == (1 if created else 0)
    assert lab.open_shells() == 0


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=3000), mutated_envelopes()))
def test_parser_returns_a_request_or_raises_a_soap_fault(body: bytes) -> None:
    from winlab.soap import SoapFault, WsmanRequest, parse_request

    try:
        assert isinstance(parse_request(body), WsmanRequest)
    except SoapFault as fault:
        assert (fault.subcode, fault.http_status) in {("w:SchemaValidationError", 400), ("", 500)}
        assert fault.subcode or fault.code == "s:MustUnderstand"


@pytest.mark.parametrize(("text", "seconds"), [("PT20S", 20.0), ("PT1.5S", 1.5), ("PT1M", 60.0), ("PT1H2M3S", 3723.0),
                                               ("60", 60.0), ("P", None), ("PT", None), ("soon", None), (None, None)])
def test_operation_timeout_durations(text: str | None, seconds: float | None) -> None:
    from winlab.soap import parse_duration_s

    assert parse_duration_s(text) == seconds


def _ntlm_negotiate_token() -> bytes:
    import spnego

    return spnego.client(ACCOUNT, PASSWORD, protocol="ntlm").step() or b""


NEGOTIATE_TOKEN = _ntlm_negotiate_token()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.one_of(st.binary(max_size=300),
                       st.builds(lambda cut, junk: NEGOTIATE_TOKEN[:cut] + junk,
                                 st.integers(0, len(NEGOTIATE_TOKEN)), st.binary(max_size=64))),
       scheme=st.sampled_from(["Negotiate", "NTLM", "Basic", "Kerberos"]))
def test_hostile_authorization_headers_get_401(lab: Lab, token: bytes, scheme: str) -> None:
    header = f"{scheme} {base64.b64encode(token).decode()}"
    resp = requests.post(lab.endpoints["HOST01"].url, data=b"<x/>", timeout=10,
                         headers={"Authorization": header, "Content-Type": "application/soap+xml;charset=UTF-8"})
    assert resp.status_code == 401
    assert lab.open_shells() == 0


@pytest.mark.parametrize("namespace", ["urn:kbfix:unknown", ""])
def test_unknown_must_understand_header_gets_must_understand_fault(lab: Lab, namespace: str) -> None:
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    body = _CREATE.replace("<env:Header>", f'<env:Header><Frobnicate{xmlns} env:mustUnderstand="true">1</Frobnicate>').encode()
    resp = _post(lab, body)
    assert resp.status_code == 500
    root = SafeET.fromstring(resp.content)
    assert root.find("s:Body/s:Fault/s:Code/s:Value", NS).text == "s:MustUnderstand"  # type: ignore[union-attr]
    assert root.find("s:Header/s:NotUnderstood", NS).get("qname", "").endswith("Frobnicate")  # type: ignore[union-attr]
    ok = _CREATE.replace("<env:Header>", '<env:Header><Frobnicate xmlns="urn:x" env:mustUnderstand="false"/>').encode()
    created = _post(lab, ok)
    assert created.status_code == 200  # an optional unknown header is ignored
    shell_id = re.search(rb'Name="ShellId">([^<]+)<', created.content).group(1)  # type: ignore[union-attr]
    assert _post(lab, _delete_for(shell_id)).status_code == 200
