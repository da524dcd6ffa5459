"""What crosses the broker, without a broker: answers round-trip through JSON to the same
response or the same remoting error; unknown error names never become arbitrary classes; the
worker refuses hosts outside its inventory or site and keeps check mode (against the lab); the
controller refuses a mutating op in check mode before publishing; bad broker settings are usage
errors (exit 2) with nothing contacted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import remoting.errors as errs
from inventory import load_inventory
from kbfix.cli import app
from kbfix.sites.app import BrokerURLError, make_app, queue_name, result_backend_for
from kbfix.sites.dispatch import Dispatcher
from kbfix.sites.signing import Signing, SigningError, generate_identity
from kbfix.sites.wire import answer_error, answer_ok, ops_of, request_doc, response_of
from kbfix.sites.worker import SiteWorker
from remoting.agent_protocol import AgentResponse, OpError, OpResult, op
from winlab.fixtures import demo_site
from winlab.lab import Lab

ERROR_CLASSES = [c for c in vars(errs).values() if isinstance(c, type) and issubclass(c, errs.RemotingError)]


@given(cls=st.sampled_from(ERROR_CLASSES), message=st.text(min_size=1, max_size=200),
       code=st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_errors_round_trip_by_class(cls: type[errs.RemotingError], message: str, code: int | None) -> None:
    if issubclass(cls, errs.OutcomeUnknownError):
        exc: errs.RemotingError = cls(message, host="w", op_ids=("3", "4"))
    elif issubclass(cls, errs.WSManFaultError):
        exc = cls(message, host="w", fault_code=code, code="s:Receiver", subcode="w:TimedOut")
    else:
        exc = cls(message, host="w", fault_code=code)
    wire = json.loads(json.dumps(answer_error(exc)))
    with pytest.raises(cls) as raised:
        response_of(wire, host="WSUS-SP1")
    got = raised.value
    assert type(got) is cls and got.message == message and got.host == "WSUS-SP1"
    assert got.kind == exc.kind
    if isinstance(exc, errs.OutcomeUnknownError):
        assert got.op_ids == ("3", "4")  # type: ignore[attr-defined]
    elif isinstance(exc, errs.WSManFaultError):
        assert (got.fault_code, got.subcode) == (code, "w:TimedOut")  # type: ignore[attr-defined]


def test_response_round_trips_and_is_reverified() -> None:
    resp = AgentResponse(nonce="ab" * 16, host={"computer_name": "WSUS-SP1", "os_version": "6.0.6001"},
                         results=(OpResult("1", "env.expand", True, {"value": "WSUS-SP1"}),
                                  OpResult("2", "file.info", False, None, OpError("not_found", "no file", "0x80070002"))),
                         elapsed_ms=12)
    back = response_of(json.loads(json.dumps(answer_ok(resp))), host="WSUS-SP1")
    assert back == resp
    bad = answer_ok(resp)
    bad["response"]["results"][0]["data"] = {"value": 7}  # wrong JSON type for env.expand's value
    with pytest.raises(errs.ProtocolError):
        response_of(bad, host="WSUS-SP1")


@pytest.mark.parametrize("answer", [None, [], {"ok": "yes"}, {"ok": True}, {"ok": False}, {"ok": True, "response": 3}])
def test_malformed_answers_are_agent_errors(answer: object) -> None:
    with pytest.raises(errs.AgentError):
        response_of(answer, host="h")


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "os.system", "ValueError", None, 3])
def test_unknown_error_types_become_agent_errors(name: object) -> None:
    with pytest.raises(errs.AgentError) as raised:
        response_of({"ok": False, "error": {"type": name, "message": "m"}}, host="h")
    assert type(raised.value) is errs.AgentError


def test_request_doc_round_trips_ops() -> None:
    ops = [op("1", "registry.values", key=r"HKLM\SOFTWARE\Microsoft\Update Services", view="64"),
           op("2", "installer.run", path=r"C:\x.msi", sha256="0" * 64, arg=["/quiet", "/norestart"])]
    assert ops_of(request_doc(ops)) == tuple(ops)


def test_worker_refuses_foreign_hosts_and_keeps_check_mode(tmp_path: Path) -> None:
    with Lab(demo_site()) as lab:
        inv = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")])
        hosts = {h.name: h for h in inv.select(None)}
        worker = SiteWorker("HQ", hosts)
        restart = request_doc([op("1", "service.restart", name="WsusService")])
        for name, why in (("NOPE", "not in the inventory"), ("WSUS-RTM", "belongs to site BRANCH")):
            answer = worker.serve(name, False, restart)
            assert answer["error"]["type"] == "ConfigurationError" and why in answer["error"]["message"]
        answer = worker.serve("WSUS-SP1", True, restart)
        assert answer["error"]["type"] == "CheckModeViolation"
        assert lab.records("WSUS-SP1").requests.total() == 0  # refused before any byte was sent
        ok = worker.serve("WSUS-SP1", True, request_doc([op("1", "env.expand", text="%COMPUTERNAME%")]))
        assert response_of(ok, host="WSUS-SP1").results[0].data == {"value": "WSUS-SP1"}


def test_controller_refuses_mutating_ops_in_check_mode_before_publishing(tmp_path: Path) -> None:
    ids = generate_identity(tmp_path / "certs", "controller")
    dispatcher = Dispatcher(make_app("redis://127.0.0.1:1/0", ids))  # nothing listens there
    with pytest.raises(errs.CheckModeViolation):
        dispatcher.send("WSUS-SP1", "HQ", [op("1", "installer.run", path="C:\\x.msi", sha256="0" * 64)],
                        check_mode=True, command_s=10)
    assert dispatcher.published == 0


def test_broker_settings() -> None:
    assert result_backend_for("redis://h:6379/3") == "redis://h:6379/3"
    assert result_backend_for("amqp://guest@h//") == "kbfix.sites.replies:ReplyBackend"
    assert queue_name(None) == "kbfix.site.default" and queue_name("HQ", "t") == "t.site.HQ"
    with pytest.raises(BrokerURLError, match="'http'"):
        result_backend_for("http://h/")
    with pytest.raises(SigningError, match="KBFIX_SIGN_KEY, KBFIX_SIGN_CERT, KBFIX_SIGN_STORE"):
        Signing.from_env({})
    with pytest.raises(SigningError, match="no such file"):
        Signing.from_env({"KBFIX_SIGN_KEY": "/nope.key", "KBFIX_SIGN_CERT": "/nope.pem", "KBFIX_SIGN_STORE": "/*"})


def test_cli_broker_without_signing_is_a_usage_error(tmp_path: Path) -> None:
    with Lab(demo_site()) as lab:
        inventory = lab.write_inventory(tmp_path / "inventory.yaml")
        result = CliRunner().invoke(app, ["-i", str(inventory), "--state", str(tmp_path / "s"), "check", "--broker",
                                          "redis://127.0.0.1:6379/9"],
                                    env={"KBFIX_SIGN_KEY": "", "KBFIX_SIGN_CERT": "", "KBFIX_SIGN_STORE": ""})
        assert result.exit_code == 2, result.output
        assert "KBFIX_SIGN_KEY" in result.stderr
        assert sum(lab.records(h.name).requests.total() for h in lab.hosts) == 0
        worker = CliRunner().invoke(app, ["worker", "--broker", "redis://127.0.0.1:6379/9", "--site", "HQ", "-i",
                                          str(inventory)],
                                    env={"KBFIX_SIGN_KEY": "", "KBFIX_SIGN_CERT": "", "KBFIX_SIGN_STORE": ""})
        assert worker.exit_code == 2 and "KBFIX_SIGN_STORE" in worker.stderr


def test_an_unreachable_broker_is_named_without_its_password(tmp_path: Path) -> None:
    ids = generate_identity(tmp_path / "certs", "controller")
    dispatcher = Dispatcher(make_app("redis://:hunter2-broker@127.0.0.1:1/0", ids))  # nothing listens there
    try:
        with pytest.raises(errs.UnreachableError) as err:
            dispatcher._broker_up("WSUS-SP1", time.monotonic())
    finally:
        dispatcher.close()
    assert "127.0.0.1:1" in str(err.value)
    assert "hunter2-broker" not in str(err.value)
