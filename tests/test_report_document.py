"""The kbfix/report/v2 document: shape, schema validation, compliance arithmetic, redaction."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest
from jsonschema import Draft202012Validator

from kbfix.report import (
    SCHEMA_ID,
    SCHEMA_PATH,
    STATUSES,
    ReportSchemaError,
    build_document,
    compliance_percent,
    render,
    validate_document,
)
from kbfix.report.sample import ADVISORIES, hosts, run_info
from kbfix.runinfo import RunInfo
from playbooks.model import Finding, HostResult, Status


@pytest.fixture(scope="module")
def doc() -> dict:
    return build_document(run_info(), hosts(), ADVISORIES)


def test_every_status_present_and_counted(doc: dict) -> None:
    by = doc["summary"]["by_status"]
    assert list(by) == list(STATUSES)
    # every run status occurs in the sample; `waived` only comes from a waiver file (test_waivers.py)
    assert all(by[s] >= 1 for s in STATUSES if s != "waived"), by
    assert by["waived"] == 0
    # 8 hosts with findings (11 findings) + 1 unreachable host without findings = 12 units
    assert sum(by.values()) == 12
    assert doc["summary"]["findings"] == 11
    assert doc["summary"]["hosts"] == 9


def test_not_applicable_and_skipped_never_failures(doc: dict) -> None:
    by = doc["summary"]["by_status"]
    assert doc["summary"]["failures"] == by["non_compliant"] + by["unknown"] + by["failed"] + by["unreachable"]
    # compliant+remediated+mitigated = 3 over 12 - 3 n/a = 9 counted: the skipped unit counts
    # against compliance (it still needed work when the run skipped it)
    assert doc["summary"]["compliance_percent"] == 33.33
    kb60 = next(a for a in doc["summary"]["per_advisory"] if a["id"] == "KB954960")
    # KB954960: compliant, remediated, mitigated / (those + pending_reboot + failed + skipped
    # + the unreachable host, assessed for no advisory) = 3/7
    assert kb60["compliance_percent"] == 42.86
    assert kb60["by_status"]["not_applicable"] == 2
    assert kb60["by_status"]["unreachable"] == 1
    assert kb60["failures"] == 2


def test_compliance_percent_rules() -> None:
    counts = dict.fromkeys(STATUSES, 0)
    assert compliance_percent(counts) is None
    counts["not_applicable"] = 5
    counts["waived"] = 4
    assert compliance_percent(counts) is None  # not applicable and waived are not counted
    counts["skipped"] = 2
    assert compliance_percent(counts) == 0.0  # skipped by the run: counted, not compliant
    assert compliance_percent(counts, out_of_scope=2) is None  # hosts the inventory disables: not counted
    counts["compliant"] = 1
    assert compliance_percent(counts, out_of_scope=2) == 100.0
    assert compliance_percent(counts) == 33.33
    counts["failed"] = 2
    assert compliance_percent(counts, out_of_scope=2) == 33.33


def test_per_site(doc: dict) -> None:
    sites = {s["site"]: s for s in doc["summary"]["per_site"]}
    assert set(sites) == {"Berlin", "Copenhagen"}
    assert sites["Berlin"]["hosts"] == 5
    assert sites["Berlin"]["by_status"]["unreachable"] == 1


def test_schema_validates_and_is_stable(doc: dict) -> None:
    validate_document(doc)
    assert doc["schema"] == SCHEMA_ID
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$id"] == SCHEMA_ID
    # the shipped file itself (with its $refs), not only the inlined copy validate_document uses
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(doc)
    # JSON rendering round-trips to the same document
    assert json.loads(render(doc, "json")) == doc
    # hosts sorted by name, advisories by id, times UTC with Z
    names = [h["name"] for h in doc["hosts"]]
    assert names == sorted(names)
    assert doc["run"]["started"] == "2026-11-23T12:00:00Z"
    executed = [x for h in doc["hosts"] for a in h["advisories"] for x in a["executed"]]
    assert {x["exit_code"] for x in executed} == {0, 3010, 1603}
    assert all(x["duration_seconds"] == 72.5 for x in executed)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["hosts"][0]["advisories"][0].update(status="bogus"),
        lambda d: d["run"].update(started="2026-11-23 12:00"),
        lambda d: d["summary"]["by_status"].pop("failed"),
        lambda d: d["hosts"][0].update(secret_extra=1),
        lambda d: d.update(schema="kbfix/report/v1"),
        lambda d: d["run"].update(stop={"reason": "lunch", "at": None, "untouched": 1, "detail": None}),
    ],
)
def test_schema_rejects_bad_documents(doc: dict, mutate) -> None:
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(ReportSchemaError) as exc:
        validate_document(bad)
    assert exc.value.errors


def test_secrets_redacted(doc: dict) -> None:
    run = run_info()
    run.options["nested"] = {"API_KEY": "k-123", "Token": "t-456", "ok": "visible"}
    d = build_document(run, hosts(), ADVISORIES)
    text = json.dumps(d)
    for secret in ("hunter2", "k-123", "t-456"):
        assert secret not in text
    assert d["run"]["options"]["nested"]["ok"] == "visible"
    assert d["run"]["options"]["forks"] == 20
    for fmt in ("html", "md", "csv", "junit"):
        assert b"hunter2" not in render(d, fmt)


def test_naive_times_are_utc_and_empty_run_is_valid() -> None:
    run = RunInfo(id="r1", kind="check", started=datetime(2026, 1, 2, 3, 4, 5), operator="op", kbfix_version="0")
    d = build_document(run, [], {})
    assert d["run"]["started"] == "2026-01-02T03:04:05Z"
    assert d["summary"]["compliance_percent"] is None
    assert d["hosts"] == []
    for fmt in ("json", "html", "md", "csv", "junit"):
        assert render(d, fmt)


def test_unknown_advisory_metadata_falls_back_to_id() -> None:
    r = HostResult.from_findings(
        "h1", [Finding(advisory="KB123456", status=Status.COMPLIANT, reason="ok")],
        started=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    d = build_document(run_info(), [r], {})
    adv = d["hosts"][0]["advisories"][0]
    assert adv["title"] == "KB123456" and adv["sources"] == [] and adv["severity"] is None
