"""Pure parts of remoting, no network: stdin chunking against the real Send envelopes, the agent
codec round trips (property tests), framing robustness, stderr text, and the op table."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remoting import agent_delivery as ad
from remoting import agent_protocol as ap
from remoting import wsman_messages as wsm
from remoting.chunking import DEFAULT_MAX_ENVELOPE_SIZE, max_chunk_bytes, split_base64, split_stdin
from remoting.errors import AgentError, ResponseTooLargeError
from remoting.ops import OPS
from remoting.session import stderr_text


def _send_envelope(chunk: bytes, end: bool) -> bytes:
    """The exact Send envelope kbfix POSTs for `chunk` (remoting.wsman_messages; built, not sent)."""
    msg = wsm.send("http://127.0.0.1:5985/wsman", 20, str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper(), chunk, end=end)
    return msg.text.encode("utf-8")


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=0, max_value=600_000), envelope=st.sampled_from([153_600, 512_000, 20_000]))
def test_chunks_rebuild_the_stream_and_each_envelope_fits(size: int, envelope: int) -> None:
    data = bytes(i % 251 for i in range(size))
    chunks = split_stdin(data, envelope)
    assert b"".join(chunks) == data
    assert len(chunks) >= 1
    # Every real Send envelope stays within MaxEnvelopeSize (the biggest chunk is the first).
    assert len(_send_envelope(chunks[0], end=len(chunks) == 1)) <= envelope


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=0, max_value=400_000), envelope=st.sampled_from([153_600, 512_000, 20_000, 9_600]))
def test_base64_chunks_are_the_base64_of_the_chunks(size: int, envelope: int) -> None:
    data = bytes(i % 253 for i in range(size))
    encoded = split_base64(base64.b64encode(data), envelope)
    assert [base64.b64decode(c) for c in encoded] == split_stdin(data, envelope)
    assert encoded == [base64.b64encode(c) for c in split_stdin(data, envelope)]


@settings(max_examples=30, deadline=None)
@given(doc=st.binary(max_size=3000), names=st.lists(st.sampled_from(sorted(OPS)), max_size=5, unique=True))
def test_stdin_base64_is_the_base64_of_the_stdin_stream(doc: bytes, names: list[str]) -> None:
    # The cached base64 of the agent line's head joined to the rest: the same text, whatever
    # the line's length modulo 3 (the op sets give agents of different lengths).
    for ops in (names, None):
        assert ad.stdin_base64(doc, ops=ops) == base64.b64encode(ad.build_stdin(doc, ops=ops))


@settings(max_examples=80, deadline=None)
@given(doc=st.one_of(st.binary(max_size=2000),
                     st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), max_size=8).map(b"\n".join),
                     st.binary(min_size=70_000, max_size=70_100)))
def test_a_request_gzip_member_inflates_to_the_document(doc: bytes) -> None:
    import gzip

    member = ad.gzip_request(doc)
    assert gzip.decompress(member) == doc
    assert ad.gunzip_bounded(member, ad.MAX_REQUEST_BYTES, "request") == doc  # one complete member, as the lab reads it


def test_requests_of_a_run_share_their_deflated_ops() -> None:
    ops = (ap.op("1", "env.expand", text="%windir%"), ap.op("2", "file.info", path=r"C:\x.dll"))
    one, two = (ap.encode_request(ap.AgentRequest(ops)) for _ in range(2))
    assert one != two  # fresh nonces
    a, b = ad.gzip_request(one), ad.gzip_request(two)
    head = len(b"".join(one.split(b"\n")[:2])) + 2 + 10 + 5  # two lines, gzip header, stored-block header
    assert a[head:-8] == b[head:-8] and a[-8:] != b[-8:]  # the same deflated tail, each its own CRC
    assert ad.parse_stdin(ad.build_stdin(one))[1] == one


def test_send_base64_is_send_and_refuses_markup() -> None:
    args = ("http://127.0.0.1:5985/wsman", 20, "S", "C")
    a, b = wsm.send(*args, b"\x00stdin\xff", end=True), wsm.send_base64(*args, base64.b64encode(b"\x00stdin\xff"), end=True)
    assert a.text.replace(a.message_id, "") == b.text.replace(b.message_id, "")
    for bad in (b"QUJD</rsp:Stream>", b"QUJD&lt;"):
        with pytest.raises(ValueError, match="base64"):
            wsm.send_base64(*args, bad, end=False)


def test_default_chunk_holds_agent_and_a_gather_request_in_one_send() -> None:
    stdin = ad.build_stdin(ap.encode_request(ap.AgentRequest((ap.op("1", "env.expand", text="%windir%"),))))
    assert len(split_stdin(stdin)) == 1
    assert max_chunk_bytes(DEFAULT_MAX_ENVELOPE_SIZE) > 100_000
    with pytest.raises(ValueError, match="no room"):
        max_chunk_bytes(4096)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_arg_value = st.one_of(_text, st.binary(max_size=40), st.integers(-(2**40), 2**40), st.booleans())
_op_name = st.sampled_from(sorted(OPS))


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(_op_name, st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                                                         st.lists(_arg_value, min_size=1, max_size=3), max_size=4)),
                    max_size=6))
def test_request_document_round_trips(ops: list[tuple[str, dict[str, list[object]]]]) -> None:
    built = tuple(ap.op(f"op{i}", name, **args) for i, (name, args) in enumerate(ops))  # type: ignore[arg-type]
    req = ap.AgentRequest(built, limit=12345)
    doc = ap.encode_request(req)
    doc.decode("ascii")  # values travel as base64: the document is plain ASCII
    back = ap.decode_request(doc)
    assert back == req
    agent, again = ad.parse_stdin(ad.build_stdin(doc, b"agent bytes"))
    assert (agent, again) == (b"agent bytes", doc)


@settings(max_examples=60, deadline=None)
@given(data=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), _text),
                         lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3),
                         max_leaves=12),
       noise=st.binary(max_size=64))
def test_response_framing_survives_stray_output(data: object, noise: bytes) -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    results = [ap.OpResult("a", "file.info", True, {"x": data}), ap.OpResult("b", "log.scan", False,
                                                                              error=ap.OpError("limit", "ø 中", None))]
    framed = ap.encode_response(ap.response_document(nonce, {"computer_name": "H"}, results))
    assert all(len(line) <= 76 for line in framed.split(b"\r\n")[1:-2])
    stdout = b"\xef\xbb\xbf#< CLIXML profile text\r\n" + noise + b"\r\n" + framed + noise
    resp = ap.decode_response(stdout, nonce)
    assert resp.results[0].data == {"x": data}
    assert resp.results[1].error == ap.OpError("limit", "ø 中", None)


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=False), st.floats(allow_nan=True), st.text()),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)


def _same_json(a: object, b: object) -> bool:
    # Equal with the same types all the way down (1 vs 1.0 vs True differ), NaN equal to NaN.
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (a != a and b != b))  # (NaN is not equal to itself)


@settings(max_examples=200, deadline=None)
@given(value=_json_value, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_response_json_reads_as_json_loads_reads_it(value: object, ascii_only: bool, indent: int | None) -> None:
    import json

    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode("utf-8")
    assert _same_json(ap._json(text), json.loads(text.decode("utf-8")))


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=60),
                     st.builds(lambda v, cut, junk: __import__("json").dumps(v).encode()[:cut] + junk,
                               _json_value, st.integers(0, 80), st.binary(max_size=4))))
def test_anything_the_fast_json_reader_reads_json_loads_reads_the_same(raw: bytes) -> None:
    # The fast reader may refuse more than json.loads (json then decides), never read otherwise.
    import json

    from pydantic_core import from_json

    try:
        fast = from_json(raw)
    except ValueError:
        return
    assert _same_json(fast, json.loads(raw.decode("utf-8")))


def test_response_json_errors_are_json_loads_errors() -> None:
    import json

    for bad in (b"\xef\xbb\xbf{}", b'{"a": 1,}', b"[1, 2", b'["\\ud800"]', b"\xff"):
        try:
            expected: object = json.loads(bad.decode("utf-8"))
        except ValueError as exc:
            with pytest.raises(type(exc)) as info:
                ap._json(bad)
            assert str(info.value) == str(exc)
        else:
            assert ap._json(bad) == expected  # (a lone surrogate: json reads it, jiter does not)


def test_response_for_another_request_or_garbage_is_an_agent_error() -> None:
    framed = ap.encode_response(ap.response_document("a" * 32, {}, []))
    with pytest.raises(AgentError, match="no framed response"):
        ap.decode_response(framed, "b" * 32)
    broken = re.sub(rb"KBFIX-BEGIN-a{32}\r\n", b"KBFIX-BEGIN-" + b"a" * 32 + b"\r\n!!!!", framed)
    with pytest.raises(AgentError, match="not valid base64"):
        ap.decode_response(broken, "a" * 32)
    with pytest.raises(ResponseTooLargeError):
        ap.decode_response(b"x" * 10_000, "a" * 32, limit=1000)


def test_stderr_text_reads_clixml_error_records() -> None:
    clixml = (b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
              b'<S S="Error">Zugriff verweigert_x000D__x000A_</S><S S="Error">at line 1_x000D__x000A_</S></Objs>')
    assert stderr_text(clixml) == "Zugriff verweigert at line 1"
    assert stderr_text(b"plain\r\nerror") == "plain error"
    assert stderr_text(b"x" * 600, limit=10) == "x" * 10 + "…"


def test_op_builder_accepts_an_argument_called_name() -> None:
    o = ap.op("s", "service.status", name=["wuauserv", "W3SVC"])
    assert o.texts("name") == ["wuauserv", "W3SVC"] and not o.mutating
    assert ap.op("r", "service.restart", name="W3SVC").mutating


def test_deadline_leaves_room_for_a_long_installer() -> None:
    from remoting.session import deadline_for

    read_only = [ap.op("a", "env.expand", text="x")]
    assert deadline_for(read_only, 300) == 300
    install = [ap.op("i", "installer.run", path=r"C:\p.msp", sha256="0" * 64)]  # default timeout 1800 s
    assert deadline_for(install, 300) == 1860
    assert deadline_for([ap.op("i", "installer.run", path="p.exe", sha256="0" * 64, timeout=60)], 300) == 300
