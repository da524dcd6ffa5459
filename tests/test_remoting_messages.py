"""The lean WS-Man layer without a network: the template envelopes are what pywinrm would send
(same fields, parsed by the lab's own request parser), the answer parser reads the lab's real
answers, refuses DTDs/entities/oversize input and never raises anything but its two error types
(property tests), and the gzip'd agent line is bounded (decompression bombs, trailing bytes)."""

from __future__ import annotations

import base64
import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remoting import agent_delivery as ad
from remoting import agent_protocol as ap
from remoting import wsman_messages as wsm
from winlab import soap

TO = "http://127.0.0.1:5985/wsman"
SHELL = "11111111-2222-3333-4444-555555555555"
CMD = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"


def _parsed(message: wsm.Message) -> soap.WsmanRequest:
    return soap.parse_request(message.text.encode("utf-8"))


def test_templates_carry_the_fields_ms_wsmv_requires() -> None:
    create = _parsed(wsm.create(TO, 20, codepage=65001, noprofile=True, idle_timeout_s=300))
    assert (create.action, create.shell_id, create.operation_timeout_s, create.max_envelope_size) == ("Create", None, 20, 153600)
    assert create.options == {"WINRS_NOPROFILE": "TRUE", "WINRS_CODEPAGE": "65001"}
    assert create.resource_uri == wsm.SHELL_URI
    cmd = _parsed(wsm.command(TO, 20, SHELL, "powershell.exe", ["-NoProfile", "a<b&c"]))
    assert (cmd.action, cmd.shell_id) == ("Command", SHELL)
    assert cmd.options == {"WINRS_CONSOLEMODE_STDIN": "TRUE", "WINRS_SKIP_CMD_SHELL": "TRUE"}
    assert cmd.body is not None
    assert [a.text for a in cmd.body if a.tag.endswith("Arguments")] == ["-NoProfile", "a<b&c"]
    send = _parsed(wsm.send(TO, 20, SHELL, CMD, b"\x00stdin\xff", end=True))
    assert send.body is not None
    stream = send.body[0]
    assert (stream.get("Name"), stream.get("CommandId"), stream.get("End")) == ("stdin", CMD, "true")
    assert base64.b64decode(stream.text or "") == b"\x00stdin\xff"
    recv = _parsed(wsm.receive(TO, 7, SHELL, CMD))
    assert (recv.action, recv.operation_timeout_s) == ("Receive", 7)
    sig = _parsed(wsm.signal_terminate(TO, 20, SHELL, CMD))
    assert sig.action == "Signal" and sig.body is not None and sig.body.get("CommandId") == CMD
    dele = _parsed(wsm.delete(TO, 20, SHELL))
    assert (dele.action, dele.shell_id, dele.body) == ("Delete", SHELL, None)
    # Every message has a fresh MessageID.
    assert wsm.delete(TO, 20, SHELL).message_id != wsm.delete(TO, 20, SHELL).message_id


def test_parser_reads_the_labs_answers() -> None:
    mid = "uuid:0A0B0C0D-0000-0000-0000-000000000001"
    a = wsm.parse_answer(soap.create_response(mid, TO, SHELL))
    assert (a.relates_to, a.shell_id) == (mid, SHELL)
    assert wsm.parse_answer(soap.command_response(mid, CMD)).command_id == CMD
    out = base64.b64encode(b"hello\r\n").decode()
    err = base64.b64encode(b"oops").decode()
    done = wsm.parse_answer(soap.receive_response(mid, CMD, out, err, True, 3))
    assert done.stream_bytes("stdout") == b"hello\r\n" and done.stream_bytes("stderr") == b"oops"
    assert done.command_state == wsm.STATE_DONE and done.exit_code == "3"
    running = wsm.parse_answer(soap.receive_response(mid, CMD, out, "", False, None))
    assert running.command_state is not None and not running.command_state.endswith("Done")
    assert running.exit_code is None


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><s>&b;</s>',
    b'<!DOCTYPE s SYSTEM "file:///etc/passwd"><s/>',
    b'<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><s>&x;</s>',
], ids=["entity-bomb", "external-dtd", "external-entity"])
def test_parser_refuses_dtds_and_entities(body: bytes) -> None:
    with pytest.raises(wsm.UnsafeXmlError):
        wsm.parse_answer(body)


def test_parser_refuses_oversize_answers_unparsed() -> None:
    with pytest.raises(wsm.UnsafeXmlError, match="larger"):
        wsm.parse_answer(b"<a>" + b"x" * wsm.MAX_ANSWER_BYTES + b"</a>")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: f"<s:E xmlns:s='u'>{t}</s:E>".encode())))
def test_parser_returns_an_answer_or_one_of_its_two_errors(data: bytes) -> None:
    try:
        answer = wsm.parse_answer(data)
    except (wsm.UnsafeXmlError, wsm.AnswerXmlError):
        return
    assert isinstance(answer, wsm.Answer)


@settings(max_examples=80, deadline=None)
@given(out=st.binary(max_size=2000), err=st.binary(max_size=200), code=st.integers(0, 2**31 - 1))
def test_receive_answers_round_trip(out: bytes, err: bytes, code: int) -> None:
    body = soap.receive_response("uuid:x", CMD, base64.b64encode(out).decode(), base64.b64encode(err).decode(), True, code)
    a = wsm.parse_answer(body)
    assert (a.stream_bytes("stdout"), a.stream_bytes("stderr"), a.exit_code) == (out, err, str(code))


# --------------------------------------------------------------------------- the gzip'd agent


def _stdin_with_agent_payload(payload: bytes) -> bytes:
    return b"KBFIX/1 AGENT-GZIP " + base64.b64encode(payload) + b"\nKBFIX/1 REQUEST " + base64.b64encode(b"doc") + b"\n"


def test_agent_travels_gzipped_and_small() -> None:
    stdin = ad.build_stdin(b"doc")
    agent_line = stdin.split(b"\n")[0]
    assert agent_line.startswith(b"KBFIX/1 AGENT-GZIP ")
    raw = ad.read_agent_bytes()
    assert gzip.decompress(base64.b64decode(agent_line[19:])) == raw
    assert len(agent_line) < len(raw) // 2  # base64 of gzip: well under half the script
    assert ad.parse_stdin(stdin) == (raw, b"doc")


def test_decompression_bomb_is_refused_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (ad.MAX_AGENT_BYTES + 1), mtime=0)
    assert len(bomb) < 10_000
    with pytest.raises(ap.RequestFormatError, match="inflates past"):
        ad.parse_stdin(_stdin_with_agent_payload(bomb))


@pytest.mark.parametrize("payload", [
    b"not gzip at all",
    gzip.compress(b"agent", mtime=0)[:-6],  # truncated: no complete member
    gzip.compress(b"agent", mtime=0) + b"trailing",
    gzip.compress(b"agent", mtime=0) + gzip.compress(b"second member", mtime=0),
    zlib.compress(b"agent"),  # zlib, not gzip framing
], ids=["junk", "truncated", "trailing", "two-members", "zlib"])
def test_agent_line_must_be_exactly_one_gzip_member(payload: bytes) -> None:
    with pytest.raises(ap.RequestFormatError):
        ad.parse_stdin(_stdin_with_agent_payload(payload))


def test_uncompressed_agent_line_is_not_understood() -> None:
    plain = b"KBFIX/1 AGENT " + base64.b64encode(ad.read_agent_bytes()) + b"\nKBFIX/1 REQUEST " + base64.b64encode(b"d") + b"\n"
    with pytest.raises(ap.RequestFormatError, match="lacks the agent"):
        ad.parse_stdin(plain)


def _tokens(source: bytes) -> list[tuple[str, bytes]]:
    """The leaves of the PowerShell parse tree (type, text), comments and the whitespace-only
    argument separators left out (a string's text is one leaf: its spaces still count)."""
    import tree_sitter
    import tree_sitter_powershell

    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language())).parse(source)
    leaves: list[tuple[str, bytes]] = []
    todo = [tree.root_node]
    while todo:
        node = todo.pop()
        if node.type == "comment":
            continue
        text = source[node.start_byte : node.end_byte]
        if node.child_count == 0 and text.strip():  # separators between arguments are leaves too
            leaves.append((node.type, text))
        todo.extend(reversed(node.children))
    return leaves


def test_minified_agent_has_exactly_the_tokens_of_agent_ps1() -> None:
    source = ad.AGENT_PATH.read_bytes()
    wire = ad.read_agent_bytes()
    assert wire == ad.minify_agent(source) and len(wire) < len(source) * 0.9
    assert _tokens(wire) == _tokens(source)


@pytest.mark.parametrize("script", [
    b'$s = "line one\n    # not a comment inside a string\n"\n',
    b"$h = @'\n  indented here-string\n'@\n",
], ids=["multi-line-string", "here-string"])
def test_token_check_catches_what_minifying_would_break(script: bytes) -> None:
    # Why agent.ps1 must have no multi-line strings: minifying them changes their text.
    assert _tokens(ad.minify_agent(script)) != _tokens(script)


# --------------------------------------------------------------------------- the gzip'd response


def _framed(nonce: str, payload: bytes) -> bytes:
    return f"KBFIX-BEGIN-{nonce}\r\n".encode() + base64.b64encode(payload) + f"\r\nKBFIX-END-{nonce}\r\n".encode()


def test_response_travels_gzipped_and_plain_json_still_reads() -> None:
    nonce = "0" * 32
    doc = ap.response_document(nonce, {"computer_name": "H"}, [ap.OpResult("1", "env.expand", True, {"value": "x" * 5000})])
    framed = ap.encode_response(doc)
    payload = base64.b64decode(b"".join(framed.split(b"\r\n")[1:-2]))
    assert payload[:2] == b"\x1f\x8b" and len(framed) < 1000  # 5000 repeated chars compress
    assert ap.decode_response(framed, nonce).results[0].data == {"value": "x" * 5000}
    import json
    plain = _framed(nonce, json.dumps(doc).encode())
    assert ap.decode_response(plain, nonce).results[0].data == {"value": "x" * 5000}


def test_response_bomb_and_corrupt_gzip_are_refused() -> None:
    from remoting.errors import AgentError, ResponseTooLargeError

    nonce = "1" * 32
    bomb = gzip.compress(b" " * (2 * 1024 * 1024), mtime=0)
    with pytest.raises(ResponseTooLargeError):
        ap.decode_response(_framed(nonce, bomb), nonce, limit=1024 * 1024)
    with pytest.raises(AgentError, match="gzip"):
        ap.decode_response(_framed(nonce, gzip.compress(b'{"a": 1}', mtime=0)[:-5]), nonce)


def test_a_fleets_first_wave_compresses_the_agent_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 forks start together: without the lock each thread missed the cache and ran zopfli
    # (~0.05-0.1 s of CPU each), which made the first wave of a run CPU-bound.
    import threading
    import time

    calls: list[int] = []
    real = ad.compress_agent

    def slow_compress(agent: bytes) -> bytes:
        calls.append(1)
        time.sleep(0.05)  # widen the window in which other threads would miss the cache
        return real(agent)

    monkeypatch.setattr(ad, "compress_agent", slow_compress)
    ad._agent_line.cache_clear()
    try:
        lines: list[bytes] = []
        threads = [threading.Thread(target=lambda: lines.append(ad.build_stdin(b"doc"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(calls) == 1 and len(set(lines)) == 1 and len(lines) == 8
    finally:
        ad._agent_line.cache_clear()
