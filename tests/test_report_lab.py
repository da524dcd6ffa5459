"""Reports from a real run: `check` over WinRM against the embedded lab's demo site, rendered in
every format and language. Guards the report builder against the shapes the playbooks and the
runner really produce (not only the hand-made sample)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET

from inventory import load_inventory
from kbfix.report import LANGUAGES, TEXT_FORMATS, build_document, render, validate_document
from kbfix.run import RunOptions, run_check
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from winlab.fixtures import demo_site
from winlab.lab import Lab


@pytest.fixture(scope="module")
def lab_doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report-lab")
    with AuditStore.in_dir(tmp / "state") as store, Lab(demo_site()) as lab:
        hosts = load_inventory([lab.write_inventory(tmp / "inventory.yaml")]).select(None)
        engine = PlaybookEngine()
        out = run_check(hosts, engine, store, RunOptions())
        return build_document(out.info, out.results, engine.advisories())


def test_lab_check_document(lab_doc: dict) -> None:
    validate_document(lab_doc)
    by = lab_doc["summary"]["by_status"]
    assert by["non_compliant"] >= 1 and by["compliant"] >= 1 and by["not_applicable"] >= 1
    assert lab_doc["run"]["kind"] == "check"
    assert {a["id"] for a in lab_doc["advisories"]} == {"KB954960", "KB954474"}
    lines = [ln for h in lab_doc["hosts"] for a in h["advisories"] for e in a["evidence"] for ln in e["lines"]]
    assert any("DeploymentAction" in ln["text"] for ln in lines)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_lab_check_renders_everywhere(lab_doc: dict, lang: str, tmp_path: Path) -> None:
    outputs = {fmt: render(lab_doc, fmt, lang=lang) for fmt in TEXT_FORMATS}
    names = [h["name"] for h in lab_doc["hosts"]]
    html = outputs["html"].decode()
    assert all(n in html for n in names)
    rows = list(csv.reader(io.StringIO(outputs["csv"].decode("utf-8-sig"))))
    units = sum(max(1, len(h["advisories"])) for h in lab_doc["hosts"])
    assert len(rows) == units + 1
    root = SafeET.fromstring(outputs["junit"])
    assert int(root.get("tests")) == units + 1  # + the `run` testcase (fails only when the run stopped early)
    assert int(root.get("failures")) == lab_doc["summary"]["failures"]
