"""Heimdall Data Format export: the document validates against MITRE's published exec-json schema
(committed with its source), one control per advisory, one result per host with its evidence."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings

from kbfix.report import build_document, format_for_path, render
from kbfix.report.hdf import HDF_SCHEMA_PATH, HDF_SCHEMA_SOURCE, HdfSchemaError, build_hdf, validate_hdf
from kbfix.report.sample import ADVISORIES, hosts, run_info
from kbfix.waivers import parse_waivers
from tests.test_report_properties import results

WAIVE = parse_waivers(b"- {host: 'cm-cph-*', advisory: KB954474, justification: retired, approved_by: CAB, "
                      b"expires: 2099-01-01}\n")


@pytest.fixture(scope="module")
def hdf() -> dict:
    doc = build_document(run_info(), hosts(), ADVISORIES, waivers=WAIVE)
    return json.loads(render(doc, "hdf"))


def test_schema_is_mitres_published_file() -> None:
    schema = json.loads(HDF_SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["title"] == "Exec JSON Output"
    assert set(schema["required"]) == {"platform", "profiles", "statistics", "version"}
    assert "mitre/heimdall2" in HDF_SCHEMA_SOURCE and "libs/inspecjs/schemas/exec-json.json" in HDF_SCHEMA_SOURCE


def test_sample_validates_and_maps_statuses(hdf: dict) -> None:
    validate_hdf(hdf)
    prof = hdf["profiles"][0]
    controls = {c["id"]: c for c in prof["controls"]}
    assert set(controls) == {"KB954474", "KB954960"}
    assert prof["groups"][0]["controls"] == ["KB954474", "KB954960"]
    kb60 = controls["KB954960"]
    assert kb60["impact"] == 0.7 and {"url": "https://support.microsoft.com/kb/954960"} in kb60["refs"]
    by = {r["resource"]: r for r in kb60["results"]}
    assert by["wsus-cph-01.corp.example"]["status"] == "passed"
    assert by["wsus-ber-01.corp.example"]["status"] == "failed"  # pending reboot: the fix is not active yet
    assert by["wsus-ber-03.corp.example"]["status"] == "error"  # installer failed
    assert "ClientImplementation.SyncUpdates" in by["wsus-ber-03.corp.example"]["message"]  # the evidence line
    assert by["dc-cph-01.corp.example"]["status"] == "skipped"  # not applicable
    assert by["wsus-ber-04.corp.example"]["status"] == "error"  # unreachable, no findings: a result per control
    waived = next(r for r in controls["KB954474"]["results"] if r["resource"] == "cm-cph-01.corp.example")
    assert waived["status"] == "skipped" and waived["skip_message"].startswith("waived (Non-compliant): retired")
    stats = hdf["statistics"]["controls"]
    assert stats["failed"]["total"] == 2 and hdf["statistics"]["duration"] == 432.0
    assert hdf["platform"] == {"name": "kbfix", "release": "0.1.0", "target_id": "20261123T120000Z-ab12"}


def test_hdf_in_the_report_language(hdf: dict) -> None:
    doc = build_document(run_info(), hosts(), ADVISORIES)
    de = build_hdf(doc, "de")
    validate_hdf(de)
    ctl = next(c for c in de["profiles"][0]["controls"] if c["id"] == "KB954960")
    assert ctl["title"] == "Einige Computer erhalten keine Updates vom WSUS-Server"
    assert "Office 2003" in ctl["desc"] and "0x8024400E" in ctl["desc"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop("profiles"),
        lambda h: h["profiles"][0]["controls"][0].update(impact=2),
        lambda h: h["profiles"][0]["controls"][0]["results"][0].update(status="green"),
        lambda h: h["profiles"][0]["controls"][0]["results"][0].pop("code_desc"),
    ],
)
def test_validator_rejects_broken_documents(hdf: dict, mutate) -> None:
    bad = copy.deepcopy(hdf)
    mutate(bad)
    with pytest.raises(HdfSchemaError):
        validate_hdf(bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results())
def test_any_run_gives_valid_hdf(rs) -> None:
    doc = build_document(run_info(), rs, ADVISORIES)
    out = build_hdf(doc)
    validate_hdf(out)
    n_results = sum(len(c["results"]) for c in out["profiles"][0]["controls"])
    # every finding is one result; a host without findings is one result in each control
    expected = sum(len(h["advisories"]) or len(out["profiles"][0]["controls"]) for h in doc["hosts"])
    assert n_results == expected


def test_file_name_selects_hdf() -> None:
    from pathlib import Path

    assert format_for_path(Path("run.hdf.json")) == "hdf"
    assert format_for_path(Path("run.json")) == "json"
    assert format_for_path(Path("run.pdf")) == "pdf"
