"""Property tests for the first-contact codecs (issue 17): any change to a signed offline answer is
refused; traced requests round-trip exactly; redaction removes every occurrence of a secret and
changes nothing else; an answered session never serves a mutating op."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbfix.offline.answers import AnswerRefused, parse_answer, verify_answer
from kbfix.offline.keystore import ExportedHost, ExportRecord, answer_key, load_or_create_key, save_export
from kbfix.offline.replay import AnsweredSession
from kbfix.trace import ops_from_json, redact, request_json
from remoting.agent_protocol import (
    AgentRequest,
    OpResult,
    encode_request,
    encode_response,
    op,
    response_document,
)
from remoting.errors import CheckModeViolation

NONCE = "0123456789abcdef0123456789abcdef"
HOST = "WSUS01"


def _signed_answer(state: Path, computer: str = HOST) -> tuple[str, bytes]:
    """A valid answer file text for HOST, and its request, with an export record in `state`.
    Written here by hand from the documented format (a third writer besides collect.ps1 and winlab)."""
    key = load_or_create_key(state)
    request = encode_request(AgentRequest((op("1", "env.expand", text="%windir%"),), nonce=NONCE))
    created = datetime.now(timezone.utc).replace(microsecond=0)
    save_export(state, ExportRecord(NONCE, created, {HOST: ExportedHost(HOST, request, HOST)}))
    doc = response_document(NONCE, {"computer_name": computer}, [OpResult("1", "env.expand", True, {"value": "C:\\WINDOWS"})])
    stdout = encode_response(doc)
    import base64

    lines = ["kbfix-offline-answer\t1", f"host\t{HOST}", f"nonce\t{NONCE}", f"computer\t{computer}",
             f"collected\t{created:%Y-%m-%dT%H:%M:%SZ}", f"request_sha256\t{hashlib.sha256(request).hexdigest()}",
             "exit_code\t0", f"stdout\t{base64.b64encode(stdout).decode()}"]
    body = "".join(x + "\n" for x in lines)
    mac = hmac.new(answer_key(key, NONCE, HOST), body.encode(), hashlib.sha256).hexdigest()
    return body + f"hmac\t{mac}\n", request


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, bytes]:
    state = tmp_path_factory.mktemp("state")
    text, request = _signed_answer(state)
    return state, text, request


def test_the_unchanged_answer_verifies(signed: tuple[Path, str, bytes], tmp_path: Path) -> None:
    state, text, _request = signed
    path = tmp_path / f"{HOST}.kbfix-answer.txt"
    path.write_text(text, encoding="ascii")
    verified = verify_answer(parse_answer(path), state, expected_host=HOST)
    assert verified.response.results[0].data == {"value": "C:\\WINDOWS"}
    assert AnsweredSession(verified).run([op("1", "env.expand", text="%windir%")]) is verified.response
    with pytest.raises(AnswerRefused, match="outdated"):
        AnsweredSession(verified).run([op("1", "env.expand", text="%SystemRoot%")])
    with pytest.raises(CheckModeViolation):
        AnsweredSession(verified).run([op("1", "service.restart", name="WsusService")])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_a_signed_answer_is_refused(signed: tuple[Path, str, bytes], tmp_path: Path,
                                                  data: st.DataObject) -> None:
    state, text, _request = signed
    body_end = text.index("hmac\t")
    pos = data.draw(st.integers(0, body_end - 1), label="position")
    alphabet = "abcXYZ019+/=\t-:"
    new = data.draw(st.sampled_from([c for c in alphabet if c != text[pos]]), label="replacement")
    mutated = text[:pos] + new + text[pos + 1:]
    path = tmp_path / f"{HOST}.kbfix-answer.txt"
    path.write_text(mutated, encoding="ascii")
    with pytest.raises(AnswerRefused):
        verify_answer(parse_answer(path), state, expected_host=HOST)


_values = st.one_of(st.text(max_size=40), st.binary(max_size=40))


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["path", "pattern", "name", "key"]), st.lists(_values, min_size=1, max_size=3)),
                max_size=4, unique_by=lambda kv: kv[0]))
def test_traced_requests_round_trip(args: list[tuple[str, list[str | bytes]]]) -> None:
    ops = [op("1", "log.scan", **dict(args)), op("2", "host.environment")]
    assert ops_from_json(json.loads(json.dumps(request_json(ops)))["ops"]) == ops


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(["a", "path", "value", "data"]), children, max_size=4)),
    max_leaves=20,
)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@settings(deadline=None)
@given(_json, st.text(alphabet="ABCdef0123!-", min_size=4, max_size=12))
def test_redaction_removes_the_secret_and_nothing_else(value: object, secret: str) -> None:
    planted = {"data": value, "value": f"x{secret}y", "list": [secret, "keep"]}
    out = redact(planted, [secret])
    assert not any(secret in s for s in _strings(out))
    assert out["list"][1] == "keep" and out["value"] == "x***y"
    if not any(secret in s for s in _strings(value)):
        assert out["data"] == value  # nothing else changed


def test_a_signed_answer_from_another_computer_is_refused(tmp_path: Path) -> None:
    # A script edited past its own computer check still cannot pass the controller's.
    text, _request = _signed_answer(tmp_path / "state", computer="WSUS02")
    path = tmp_path / f"{HOST}.kbfix-answer.txt"
    path.write_text(text, encoding="ascii")
    with pytest.raises(AnswerRefused, match="collected on computer 'WSUS02', not 'WSUS01'") as err:
        verify_answer(parse_answer(path), tmp_path / "state", expected_host=HOST)
    assert err.value.reason == "foreign"
