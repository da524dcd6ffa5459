"""remoting/answer_shapes.py: the lab agent's real answers pass; the same answers with their
values in the wrong JSON types (winlab.hostile) fail as ProtocolError, op by op."""

from __future__ import annotations

import pytest

from remoting.agent_protocol import AgentRequest
from remoting.answer_shapes import SHAPES, check_host, check_result
from remoting.errors import ProtocolError
from tests.test_remoting_support import gather_ops, make_hosts
from winlab.host import run_agent_request
from winlab.hostile import apply


def _answer() -> tuple[dict, list]:
    host = make_hosts()[0]
    _result, response = run_agent_request(host, AgentRequest(tuple(gather_ops())))
    assert response is not None
    return response.host, [r for r in response.results if r.ok and r.data]


def test_real_answers_pass() -> None:
    host_info, results = _answer()
    check_host(host_info)
    assert {r.op for r in results} >= {"registry.values", "file.info", "log.scan", "products.list", "service.status"}
    for r in results:
        check_result(r.op, r.data)


def test_every_type_confused_answer_is_a_protocol_error() -> None:
    host_info, results = _answer()
    doc = apply({"host": host_info, "results": [{"id": r.id, "op": r.op, "ok": True, "data": r.data} for r in results]},
                type_confused=True, escape_names=False)
    with pytest.raises(ProtocolError, match="protocol error from host"):
        check_host(doc["host"], host="WSUS01")
    for item in doc["results"]:
        assert item["op"] in SHAPES
        with pytest.raises(ProtocolError) as e:
            check_result(item["op"], item["data"], host="WSUS01")
        assert e.value.kind == "protocol" and item["op"] in e.value.message


def test_extra_fields_of_any_type_pass() -> None:
    # A newer agent may add fields (PROTOCOL.md: extra fields ignored), at any level.
    host_info, results = _answer()
    check_host({**host_info, "new_field": [1, {"x": None}]})
    for r in results:
        data = {**(r.data or {}), "added_by_a_newer_agent": {"any": ["shape", 1, 2.5, None, True]}}
        check_result(r.op, data)
    check_result("log.scan", {"files": [{"path": "C:/x.log", "extra": 1, "matches": [{"line": "l", "more": {}}]}]})
