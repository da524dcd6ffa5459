"""An apply that stops after batch 2 (max-fail), over real WinRM to the lab, reported in every
format: each carries the early-stop banner first (why, when, how many hosts untouched), the
untouched hosts keep their last known state, roles and OS and count as not compliant, and the
run's operator, change ticket and approver are recorded in the store and in every report."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from defusedxml import ElementTree as ET
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.report.document import COMPLIANT_STATUSES
from kbfix.report.hdf import validate_hdf
from kbfix.report.pdf import find_chromium
from kbfix.store import AuditStore
from tests.test_run_lab import SERVERS, demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

UNTOUCHED = ("WSUS-DE", "WSUS-NL", "WSUS-CN")
FORMATS = ["json", "html", "md", "csv", "xml", "hdf.json"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("stopped")
    packages = make_packages(tmp / "pkgs")
    state = tmp / "state"
    runner = CliRunner()
    lab_hosts = load_host_fixture_text(demo_text(fail_host="WSUS-DK", time_scale=0.05), "demo", DEMO_SITE.parent)
    formats = FORMATS + (["pdf"] if find_chromium() else [])
    with Lab(lab_hosts) as lab:
        inv = lab.write_inventory(tmp / "inventory.yaml")
        base = ["-q", "-i", str(inv), "--state", str(state), "--limit", ":".join(SERVERS)]
        r = runner.invoke(app, [*base, "plan", "--packages", str(packages), "-o", str(tmp / "plan.json")])
        assert r.exit_code == 3, r.output
        reports = [tmp / f"report.{ext}" for ext in formats]
        r = runner.invoke(app, [
            *base, "apply", "--plan", str(tmp / "plan.json"), "--packages", str(packages), "--serial", "1,50%,100%",
            "--max-fail-percent", "30", "--yes", "--change-ticket", "CHG-0815", "--approved-by", "CAB 2026-11 (J. Jensen)",
            "--operator", "anna@jump01", *[a for p in reports for a in ("-r", str(p))],
        ])
        assert r.exit_code == 4, r.output  # WSUS-DK's installer failed
        for name in UNTOUCHED:
            assert lab.records(name).mutations == []
    return {"tmp": tmp, "state": state, "reports": {p.name.removeprefix("report."): p for p in reports},
            "runner": runner}


def _doc(stopped: dict) -> dict:
    return json.loads(stopped["reports"]["json"].read_text(encoding="utf-8"))


def test_document_counts_untouched_hosts_as_not_compliant(stopped: dict) -> None:
    doc = _doc(stopped)
    stop = doc["run"]["stop"]
    assert stop["reason"] == "max_fail" and stop["untouched"] == 3
    assert "batch 2" in stop["detail"] and "1 of 3" in stop["detail"]
    assert doc["run"]["state"] == "completed"  # the run itself ended normally: only the banner says it stopped
    by = {h["name"]: h for h in doc["hosts"]}
    for name in UNTOUCHED:
        h = by[name]
        assert h["status"] == "skipped" and h["skip_reason"] == "max_fail"
        assert h["roles"] and h["os"], h  # the host row keeps its facts
        assert h["last_known"]["status"] == "non_compliant"  # from the plan run it rests on
        assert all(a["last_status"] == "non_compliant" for a in h["advisories"] if a["status"] == "skipped")
    sm = doc["summary"]
    assert sm["hosts_untouched"] == 3
    units = [a["status"] for h in doc["hosts"] for a in h["advisories"]] + [
        h["status"] for h in doc["hosts"] if not h["advisories"]]
    counted = [s for s in units if s not in ("not_applicable", "waived")]
    good = sum(1 for s in counted if s in COMPLIANT_STATUSES)
    assert sm["compliance_percent"] == round(100 * good / len(counted), 2)
    skipped = sum(1 for s in counted if s == "skipped")
    assert skipped >= 3
    assert sm["compliance_percent"] < round(100 * good / (len(counted) - skipped), 2)  # they pull it down
    run = doc["run"]
    assert (run["operator"], run["change_ticket"], run["approved_by"]) == ("anna@jump01", "CHG-0815",
                                                                           "CAB 2026-11 (J. Jensen)")


def test_every_format_opens_with_the_banner(stopped: dict) -> None:
    reps = stopped["reports"]
    words = "3 host(s) were never touched and count as not compliant"
    html = reps["html"].read_text(encoding="utf-8")
    assert html.index('id="stopped"') < html.index('id="run"') < html.index('id="summary"')
    assert words in html and "CHG-0815" in html and "anna@jump01" in html
    md = reps["md"].read_text(encoding="utf-8")
    banner_line = md.splitlines()[2]  # right under the title, before the run table
    assert banner_line.startswith("> **Run stopped early") and words in banner_line and "batch 2" in banner_line
    assert "| Change ticket | CHG-0815 |" in md and "| Operator | anna@jump01 |" in md
    rows = list(csv.DictReader(io.StringIO(reps["csv"].read_text(encoding="utf-8-sig"))))
    assert rows and all(words in r["Run stopped early"] for r in rows)
    assert all(r["Change ticket"] == "CHG-0815" and r["Operator"] == "anna@jump01" for r in rows)
    assert {r["Skip reason"] for r in rows if r["Host"] in UNTOUCHED} == {"max_fail"}
    root = ET.fromstring(reps["xml"].read_bytes())
    first = root.find("testsuite")
    assert first.get("name") == "run" and first.get("failures") == "1"
    assert words in first.find("testcase/failure").get("message")
    hdf = json.loads(reps["hdf.json"].read_text(encoding="utf-8"))
    validate_hdf(hdf)
    prof = hdf["profiles"][0]
    assert words in prof["status_message"] and "CHG-0815" in prof["summary"]
    untouched = [r for c in prof["controls"] if c["id"] == "KB954960" for r in c["results"] if r["resource"] in UNTOUCHED]
    assert untouched and all(r["status"] == "failed" and "max_fail" in r["code_desc"] for r in untouched)
    if "pdf" in reps:
        from pypdf import PdfReader

        text = " ".join((p.extract_text() or "") for p in PdfReader(reps["pdf"]).pages)
        assert "Run stopped early" in re.sub(r"\s+", " ", text)


def test_store_records_who_and_every_report_hash(stopped: dict) -> None:
    with AuditStore.in_dir(stopped["state"]) as store:
        run_id = store.latest_run_id("apply")
        info = store.run_info(run_id)
        assert (info.operator, info.change_ticket, info.approved_by) == ("anna@jump01", "CHG-0815",
                                                                         "CAB 2026-11 (J. Jensen)")
        recorded = {Path(r["path"]).name for r in store.reports(run_id)}
        assert recorded == {p.name for p in stopped["reports"].values()}
        assert store.verify_chain().ok
    for path in stopped["reports"].values():
        r = stopped["runner"].invoke(app, ["--state", str(stopped["state"]), "audit", "verify", str(path)])
        assert r.exit_code == 0 and f"run {run_id}" in r.output, r.output


def test_status_shows_latest_known_state_per_host(stopped: dict) -> None:
    r = stopped["runner"].invoke(app, ["--state", str(stopped["state"]), "status", "--format", "json"])
    assert r.exit_code == 0, r.output
    states = {s["host"]: s for s in json.loads(r.output)}
    assert set(SERVERS) <= set(states)
    with AuditStore.in_dir(stopped["state"]) as store:
        apply_id = store.latest_run_id("apply")
        plan_id = store.latest_run_id("plan")
    # untouched hosts: still the plan run's verdict; the others: the apply run's
    for name in UNTOUCHED:
        assert (states[name]["status"], states[name]["run_id"], states[name]["run_kind"]) == ("non_compliant", plan_id,
                                                                                              "plan")
    assert states["WSUS-SP1"]["run_id"] == apply_id and states["WSUS-SP1"]["status"] == "remediated"
    assert states["WSUS-DK"]["status"] == "failed"
    assert all(0 <= s["age_seconds"] < 3600 and s["age"] for s in states.values())
    table = stopped["runner"].invoke(app, ["--state", str(stopped["state"]), "status"])
    assert table.exit_code == 0 and "WSUS-CN" in table.output and plan_id in table.output
    fleet = stopped["runner"].invoke(app, ["--state", str(stopped["state"]), "report", "fleet", "-o",
                                           str(stopped["tmp"] / "fleet.csv")])
    assert fleet.exit_code == 0, fleet.output
    assert "WSUS-CN" in (stopped["tmp"] / "fleet.csv").read_text(encoding="utf-8-sig")


def test_apply_refuses_without_ticket_when_config_requires_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("require_change_ticket: true\n", encoding="utf-8")
    monkeypatch.setenv("KBFIX_CONFIG", str(cfg))
    inv = tmp_path / "inv.yaml"
    inv.write_text("hosts:\n  h1:\n    address: 127.0.0.1\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "s"), "apply", "--yes"])
    assert r.exit_code == 2 and "--change-ticket" in r.output
    assert not (tmp_path / "s").exists()  # nothing contacted, nothing written
