"""The early-stop banner for each way a run stops (max-fail, interrupt, window end), built from the
runner's own skipped results, and the last known state a skipped host keeps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from kbfix.report import LastKnown, build_document, render
from kbfix.report.i18n import LocaleFormat
from kbfix.report.sample import ADVISORIES, run_info
from kbfix.report.view import stop_text
from kbfix.run import skipped_result
from playbooks.model import Evidence, Finding, HostResult, LogLine, PlannedAction, Status

T0 = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


def _host(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, site="Aarhus", endpoint=None, skipped_reason=None)


def _needs_work() -> Finding:
    return Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason="DLL 3.1.6001.65",
                   planned=[PlannedAction(id="p1", advisory="KB954960", kind="install_package", description="install")])


def _earlier(name: str) -> LastKnown:
    r = HostResult.from_findings(name, [_needs_work()], roles=["wsus_server"], os={"os_version": "5.2.3790"},
                                 address="10.0.0.9", started=T0 - timedelta(hours=2))
    return LastKnown(run_id="20261123T100000Z-plan", at=T0 - timedelta(hours=2), result=r)


@pytest.mark.parametrize(
    ("reason", "state", "events", "detail"),
    [
        ("max_fail", "completed", [{"state": "note", "detail": "stopped after batch 2: 2 of 4 hosts failed"}],
         "stopped after batch 2: 2 of 4 hosts failed"),
        ("interrupted", "interrupted", [{"state": "interrupted", "detail": "SIGTERM"}], "SIGTERM"),
        ("window", "completed", [], "change window ends"),
    ],
)
def test_banner_for_each_stop(reason: str, state: str, events: list, detail: str) -> None:
    done = HostResult.from_findings("a", [Finding(advisory="KB954960", status=Status.REMEDIATED, reason="ok")],
                                    started=T0, ended=T0 + timedelta(minutes=1))
    skipped = [skipped_result(_host(n), reason, "change window ends" if reason == "window" else "stop", [_needs_work()])
               for n in ("b", "c")]
    run = run_info()
    run.state = state  # type: ignore[assignment]
    doc = build_document(run, [done, *skipped], ADVISORIES, events=events,
                         last_known={"b": _earlier("b"), "c": _earlier("c")})
    stop = doc["run"]["stop"]
    assert stop["reason"] == reason and stop["untouched"] == 2 and stop["detail"] == detail
    assert stop["at"] == min(h["ended"] for h in doc["hosts"] if h["skip_reason"] == reason)
    b = next(h for h in doc["hosts"] if h["name"] == "b")
    assert b["roles"] == ["wsus_server"] and b["os"] == {"os_version": "5.2.3790"} and b["address"] == "10.0.0.9"
    assert b["last_known"] == {"run_id": "20261123T100000Z-plan", "at": "2026-11-23T10:00:00Z", "status": "non_compliant"}
    assert b["advisories"][0]["last_status"] == "non_compliant"
    assert doc["summary"]["compliance_percent"] == round(100 / 3, 2)  # 1 remediated of 3 counted
    for lang in ("en", "de", "zh_CN"):
        text = stop_text(doc, LocaleFormat(lang))
        assert text and detail in text
        assert text in render(doc, "html", lang=lang).decode()


def test_no_banner_for_a_run_that_went_through_or_per_host_skips() -> None:
    drift = skipped_result(_host("d"), "drift", "facts changed", [_needs_work()])
    doc = build_document(run_info(), [drift], ADVISORIES)
    assert doc["run"]["stop"] is None
    assert doc["summary"]["compliance_percent"] == 0.0  # drift counts against compliance, no banner
    assert doc["hosts"][0]["last_known"] is None  # no earlier run known: nothing invented
    assert "Run stopped early" not in render(doc, "md").decode()


def test_interrupted_run_without_untouched_hosts_still_has_a_banner() -> None:
    run = run_info()
    run.state = "interrupted"  # type: ignore[assignment]
    r = HostResult.from_findings("a", [Finding(advisory="KB954960", status=Status.COMPLIANT, reason="ok")], started=T0)
    doc = build_document(run, [r], ADVISORIES, events=[{"state": "interrupted", "detail": "SIGINT"}])
    assert doc["run"]["stop"] == {"reason": "interrupted", "at": "2026-11-23T12:07:12Z", "untouched": 0,
                                  "detail": "SIGINT"}


def test_inventory_disabled_host_is_out_of_scope() -> None:
    off = HostResult(host="ssh-box", status=Status.SKIPPED, started=T0,
                     error={"kind": "skipped", "message": "inventory: ansible_connection is ssh, not winrm"})
    ok = HostResult.from_findings("a", [Finding(advisory="KB954960", status=Status.COMPLIANT, reason="ok")], started=T0)
    sm = build_document(run_info(), [off, ok], ADVISORIES)["summary"]
    assert sm["out_of_scope"] == 1 and sm["compliance_percent"] == 100.0 and sm["hosts_untouched"] == 0


def test_repeated_log_lines_shown_once() -> None:
    line = LogLine(file="C:\\x\\SoftwareDistribution.log", offset=4096, text="ClientImplementation.SyncUpdates ...")
    other = LogLine(file="C:\\x\\SoftwareDistribution.log", offset=8192, text="SoapUtilities.CreateException ...")
    f = Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason="log", evidence=[
        Evidence(probe="log.scan", lines=[line, line, other], observed_at=T0),  # matched by two signatures
        Evidence(probe="log.scan localized", lines=[line], observed_at=T0),
    ])
    doc = build_document(run_info(), [HostResult.from_findings("h", [f], started=T0)], ADVISORIES)
    ev = doc["hosts"][0]["advisories"][0]["evidence"]
    assert [len(e["lines"]) for e in ev] == [2, 0] and [e["shared_lines"] for e in ev] == [1, 1]
    assert render(doc, "md").decode().count("ClientImplementation.SyncUpdates") == 1
