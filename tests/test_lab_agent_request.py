"""Property tests of `winlab.agent_request.parse_like_agent` (the lab reads requests as agent.ps1).

Any request the client encodes parses to the same ops; any extra line after an op line marks
only that op bad (never the whole request); a request without a header or nonce is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remoting.agent_protocol import AgentRequest, RequestFormatError, encode_request, op
from winlab.agent_request import parse_like_agent

_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=12)
_TEXT = st.text(min_size=0, max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> AgentRequest:
    ids = draw(st.lists(_IDS, min_size=0, max_size=6, unique=True))
    ops = [op(i, "env.expand", text=draw(_TEXT)) if n % 2 else op(i, "log.scan", path=draw(_TEXT) or "x",
                                                                    pattern=draw(st.lists(_TEXT, min_size=1, max_size=3)))
           for n, i in enumerate(ids)]
    return AgentRequest(tuple(ops), limit=draw(st.integers(min_value=0, max_value=10**12)))


@settings(max_examples=150, deadline=None)
@given(requests())
def test_client_requests_parse_to_the_same_ops(req: AgentRequest) -> None:
    parsed = parse_like_agent(encode_request(req))
    assert parsed.bad == {}
    assert parsed.request.nonce == req.nonce and parsed.request.limit == req.limit
    assert [(o.id, o.name, dict(o.args)) for o in parsed.request.ops] == [(o.id, o.name, dict(o.args)) for o in req.ops]


@settings(max_examples=150, deadline=None)
@given(requests(), st.data())
def test_a_bad_line_fails_only_the_op_it_follows(req: AgentRequest, data: st.DataObject) -> None:
    if not req.ops:
        return
    lines = encode_request(req).decode().split("\n")
    op_lines = [n for n, ln in enumerate(lines) if ln.startswith("op\t")]
    k = data.draw(st.integers(min_value=0, max_value=len(op_lines) - 1))
    junk = data.draw(st.sampled_from(["arg\tx\t@@@", "bogus", "arg\tonly-two", "op\tbad id!\tx"]))
    lines.insert(op_lines[k] + 1, junk)
    parsed = parse_like_agent("\n".join(lines).encode())
    assert set(parsed.bad) == {k}
    assert [o.id for o in parsed.request.ops] == [o.id for o in req.ops]


def test_header_and_nonce_are_required() -> None:
    good = encode_request(AgentRequest((op("a", "env.expand", text="x"),)))
    with pytest.raises(RequestFormatError):
        parse_like_agent(good.replace(b"kbfix-agent-request\t1", b"kbfix-agent-request\t2"))
    with pytest.raises(RequestFormatError):
        parse_like_agent(b"\n".join(ln for ln in good.split(b"\n") if not ln.startswith(b"nonce")))
    assert parse_like_agent(good.replace(b"limit\t", b"# \t")).request.limit == 8388608  # the agent's default
