"""Issue 21 units: the reboot-state parser (property test), the options and their layering,
the CLI's refusal of bad reboot options (exit 2, nothing contacted), and the restart-and-wait
sequence against the lab when the answer to `system.reboot` is lost (never re-sent)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.config import ConfigError, load_config
from playbooks.model import ExecutedAction, PlannedAction
from playbooks.reboot import (
    RebootOptionError,
    RebootOptions,
    RebootSettings,
    read_reboot_state,
    reboot_and_wait,
    resolve_reboot_options,
)
from playbooks.reboot_facts import parse_reboot_state
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.session import AgentSession
from tests.helpers import unreachable_inventory
from winlab.fixtures import load_host_fixture_text
from winlab.lab import Lab

_scalar = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=12)
_value = _scalar | st.lists(_scalar, max_size=4)
_KEYS = ["cbs_reboot_pending", "wu_reboot_required", "pending_file_renames", "pending_file_renames_count",
         "last_boot", "last_boot_error", "x"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _value))
def test_parse_reboot_state_never_raises_and_pending_follows_the_indicators(data: dict[str, Any]) -> None:
    s = parse_reboot_state(data)
    count = data.get("pending_file_renames_count")
    renames = [x for x in data.get("pending_file_renames") or [] if isinstance(x, str)] \
        if isinstance(data.get("pending_file_renames"), list) else []
    expect_renames = (count > 0) if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else bool(renames)
    expected = data.get("cbs_reboot_pending") is True or data.get("wu_reboot_required") is True or expect_renames
    assert s.pending is expected
    assert len(s.pending_file_renames) <= 64


def test_parse_reboot_state_reads_the_agent_shape() -> None:
    s = parse_reboot_state({"cbs_reboot_pending": True, "wu_reboot_required": False,
                            "pending_file_renames": ["\\??\\C:\\a", ""], "pending_file_renames_count": 2,
                            "last_boot": "2008-08-01T06:00:00Z", "last_boot_error": None})
    assert s.indicators == ["cbs_reboot_pending", "pending_file_renames"]
    assert s.last_boot == datetime(2008, 8, 1, 6, tzinfo=timezone.utc)
    assert "Component Based Servicing\\RebootPending exists" in s.describe()


@pytest.mark.parametrize("kw, words", [
    ({"policy": "sometimes"}, "not one of"),
    ({"message": 'say "hi"'}, "double quote"),
    ({"message": "x" * 128}, "127"),
    ({"pre_reboot_delay": 601}, "0..600"),
    ({"timeout_s": 0}, "timeout"),
])
def test_reboot_options_refuse_what_shutdown_exe_would(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(RebootOptionError, match=words):
        RebootOptions(**kw)


def test_reboot_settings_layer_command_line_then_plan_then_config() -> None:
    cli = RebootSettings(policy="always")
    plan = RebootSettings(policy="never", timeout=300)
    config = RebootSettings(timeout=900, message="cfg", pre_reboot_delay=5)
    o = resolve_reboot_options(cli, plan, config)
    assert (o.policy, o.timeout_s, o.message, o.pre_reboot_delay) == ("always", 300.0, "cfg", 5)
    assert resolve_reboot_options(None, None, None).policy == "never"


def test_config_file_reboot_section_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("reboot: {policy: if-needed, timeout: 900}\n", encoding="utf-8")
    assert load_config(good).reboot == RebootSettings(policy="if-needed", timeout=900)
    bad = tmp_path / "bad.yaml"
    bad.write_text("reboot: {policy: if-needed, timout: 900}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: reboot.timout"):
        load_config(bad)


@pytest.mark.parametrize("args, words", [
    (["--reboot", "sometimes"], "--reboot"),
    (["--reboot", "if-needed", "--reboot-message", 'a "quoted" text'], "double quote"),
    (["--reboot", "always", "--pre-reboot-delay", "900"], "0..600"),
])
def test_cli_refuses_bad_reboot_options_before_contacting_anything(tmp_path: Path, args: list[str], words: str) -> None:
    inv = unreachable_inventory(tmp_path / "inventory.yaml")  # a contact attempt would show as unreachable
    r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "apply", "--yes", *args])
    assert r.exit_code == 2, r.output
    assert words in r.output
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


class _Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []

    def intent(self, host: str, action: PlannedAction) -> None:
        self.events.append(("intent", action.id, None))

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        self.events.append(("result", action.id, executed.outcome))


def test_a_lost_answer_to_the_restart_is_not_resent_and_the_wait_decides(tmp_path: Path) -> None:
    fixture = ("hosts:\n- name: R\n  accounts: {'LAB\\kbfix': Secret-1}\n  time_scale: 0.02\n"
               "  boot: {reboot_seconds: 40}\n  faults: {drop_after_mutation: true}\n")
    with Lab(load_host_fixture_text(fixture, "drop")) as lab:
        lep = lab.endpoints["R"]
        ep = Endpoint(host="R", address=lep.address, port=lep.port, scheme="http", transport="ntlm",
                      username="LAB\\kbfix", password=Secret("Secret-1"),
                      timeouts=Timeouts(connect=2, operation=2, read=5, command=10))

        def probe() -> Any:
            with AgentSession(ep) as s:
                return read_reboot_state(s)

        journal = _Journal()
        with AgentSession(ep, check_mode=False) as s:
            before = read_reboot_state(s)
            assert before is not None and before.last_boot is not None
            record, done = reboot_and_wait(s, probe, "R", journal, RebootOptions(policy="always", timeout_s=15,
                                                                                pre_reboot_delay=0, poll_s=0.1),
                                           before.last_boot, close=s.close)
        assert done.outcome == "success", record.detail
        assert record.down is not None and record.up is not None and record.boot_after != before.last_boot
        assert [m.op for m in lab.records("R").mutations] == ["system.reboot"]  # sent once, never again
        assert journal.events == [("intent", "reboot", None), ("result", "reboot", "success")]


class _Answer:
    def __init__(self, data: dict[str, Any]) -> None:
        from remoting.agent_protocol import OpResult
        self.results = [OpResult(id="reboot", op="system.reboot", ok=True, data=data)]


class _ReplaySession:
    """Answers system.reboot with `data` (the sequence's own input, not a WinRM client)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.sent = 0

    def run(self, ops: Any) -> _Answer:
        self.sent += 1
        return _Answer(self.data)


def _timeline(states: list[Any]) -> tuple[Any, Any, Any]:
    """probe/clock/monotonic/sleep over a scripted list of probe outcomes (an Exception = down)."""
    t = [0.0]
    seq = iter(states)

    def probe() -> Any:
        s = next(seq, states[-1])
        if isinstance(s, Exception):
            raise s
        return s

    def sleep(dt: float) -> None:
        t[0] += dt

    return probe, (lambda: t[0]), sleep


def test_without_a_boot_time_from_before_the_host_must_first_be_seen_down() -> None:
    from remoting.errors import UnreachableError
    old = parse_reboot_state({"last_boot": "2008-08-01T06:00:00Z"})
    new = parse_reboot_state({"last_boot": "2026-01-01T00:00:00Z"})
    probe, mono, sleep = _timeline([old, UnreachableError("refused", host="R"), new])
    record, done = reboot_and_wait(_ReplaySession({"last_boot": None}), probe, "R", _Journal(),
                                   RebootOptions(policy="always", timeout_s=10, pre_reboot_delay=0, poll_s=1),
                                   None, monotonic=mono, sleep=sleep)
    assert done.outcome == "success" and record.down is not None and record.boot_after == new.last_boot


def test_a_host_that_keeps_its_boot_time_fails_at_the_timeout_and_says_so() -> None:
    same = parse_reboot_state({"last_boot": "2008-08-01T06:00:00Z"})
    probe, mono, sleep = _timeline([same])
    session = _ReplaySession({"last_boot": "2008-08-01T06:00:00Z"})
    journal = _Journal()
    _record, done = reboot_and_wait(session, probe, "R", journal,
                                   RebootOptions(policy="always", timeout_s=5, pre_reboot_delay=1, poll_s=1),
                                   same.last_boot, monotonic=mono, sleep=sleep)
    assert done.outcome == "failed" and session.sent == 1
    assert "did not come back within 6 s" in (done.detail or "") and "never stopped answering" in (done.detail or "")
    assert journal.events[-1] == ("result", "reboot", "failed")


def test_reboot_answers_of_the_wrong_type_are_protocol_errors() -> None:
    from remoting.answer_shapes import check_result
    from remoting.errors import ProtocolError
    check_result("system.reboot_state", {"cbs_reboot_pending": False, "pending_file_renames": ["a", ""],
                                         "pending_file_renames_count": 2, "last_boot": "2008-08-01T06:00:00Z"})
    with pytest.raises(ProtocolError, match=r"system\.reboot_state"):
        check_result("system.reboot_state", {"pending_file_renames": "not a list"})
    with pytest.raises(ProtocolError, match=r"system\.reboot "):
        check_result("system.reboot", {"last_boot": ["2008"]})
