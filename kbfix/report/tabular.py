"""The CSV and JUnit XML renderings: one row / one testcase per host per advisory.

CSV (RFC 4180 via the csv module) is for spreadsheets: headings and status labels in the report
language, cells guarded against formula injection. JUnit XML (the Ant/Jenkins `testsuites`
shape CI dashboards read) is built with ElementTree, so every value is escaped; characters XML
cannot carry are removed. Hosts without findings (e.g. unreachable) get one row / testcase.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET  # building XML only; never used to parse input
from collections.abc import Iterator, Mapping
from typing import Any

from kbfix.report.env import os_text
from kbfix.report.i18n import CSV_COLUMNS, LocaleFormat, parse_iso
from kbfix.report.text import csv_cell, xml_text
from kbfix.report.view import stop_text
from playbooks.model import Status

Row = tuple[Mapping[str, Any], Mapping[str, Any] | None]
FAILURE_STATUSES = frozenset(s.value for s in Status if s.is_failure or s.is_vulnerable)
# JUnit <skipped>: results that are neither a pass nor a failure. A unit the run skipped counts
# against compliance (docs/reports.md) but is not a test failure; the stop banner is one.
SKIPPED_STATUSES = frozenset({"not_applicable", "skipped", "waived"})


def _units(doc: Mapping[str, Any]) -> Iterator[Row]:
    for host in doc["hosts"]:
        if not host["advisories"]:
            yield host, None
        for adv in host["advisories"]:
            yield host, adv


def _evidence_text(adv: Mapping[str, Any]) -> str:
    """Evidence as plain lines: `probe = value` then the matched log lines verbatim."""
    out: list[str] = []
    for ev in list(adv["evidence"]) + list(adv["verification"]):
        head = ev["probe"] + ("" if ev["value"] is None else f" = {ev['value']}")
        out.append(head)
        out.extend(f"{ln['file']} @{ln['offset']}: {ln['text']}" for ln in ev["lines"])
    return "\n".join(out)


def _waiver_text(w: Mapping[str, Any]) -> str:
    return f"{w['justification']} (approved by {w['approved_by']}, expires {w['expires']}, {w['source']})"


def render_csv(doc: Mapping[str, Any], lang: str) -> bytes:
    """UTF-8 CSV with a BOM (so spreadsheet programs detect the encoding), CRLF rows. Every row
    carries the run id, operator, change ticket, approver and, for a run that stopped early, the
    banner text (a CSV has no header area a spreadsheet would keep)."""
    f = LocaleFormat(lang)
    run = doc["run"]
    banner = stop_text(doc, f) or ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([f.gettext(label) for _key, label in CSV_COLUMNS])
    for host, adv in _units(doc):
        status = host["status"] if adv is None else adv["status"]
        observed = [e["observed_at"] for e in (adv["evidence"] if adv else [])]
        row = {
            "host": host["name"],
            "address": host["address"],
            "site": host["site"],
            "roles": ", ".join(host["roles"]),
            "os": os_text(host["os"]),
            "host_status": f.status(host["status"]),
            "advisory": adv["id"] if adv else "",
            "title": f.title(adv["id"], adv["title"]) if adv else "",
            "severity": f.severity(adv["severity"]) if adv else "",
            "status": f.status(status),
            "status_code": status,
            "reason": adv["reason"] if adv else (host["error"] or {}).get("message", ""),
            "variant": adv["variant"] if adv else "",
            "evidence": _evidence_text(adv) if adv else "",
            "planned": "; ".join(f"{p['id']}: {p['description']}" for p in adv["planned"]) if adv else "",
            "executed": "; ".join(
                f"{x['action_id']}: {x['outcome']} ({x['exit_code']})" for x in adv["executed"]
            )
            if adv
            else "",
            "observed": max(observed) if observed else "",
            "skip_reason": host["skip_reason"] or "",
            "last_status": f.status(adv["last_status"]) if adv and adv["last_status"] else "",
            "waiver": _waiver_text(adv["waiver"]) if adv and adv["waiver"] else "",
            "run": run["id"],
            "operator": run["operator"],
            "change_ticket": run["change_ticket"],
            "approved_by": run["approved_by"],
            "run_stop": banner,
        }
        w.writerow([csv_cell(row[key]) for key, _label in CSV_COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _host_seconds(host: Mapping[str, Any]) -> float | None:
    """Wall time of the host's run in seconds (JUnit `time`), None when it has no end."""
    if not host.get("ended"):
        return None
    return max(0.0, (parse_iso(host["ended"]) - parse_iso(host["started"])).total_seconds())


def _attr(value: object) -> str:
    return xml_text("" if value is None else str(value))


def render_junit(doc: Mapping[str, Any], lang: str) -> bytes:
    """JUnit XML: first a `run` suite (run properties; one testcase that fails with the banner
    when the run stopped early), then one `testsuite` per advisory (plus `host` for hosts without findings), one
    `testcase` per host (`classname` = `kbfix.<advisory>.<site>`, `time` = the host's seconds). Failing statuses →
    `<failure type=status>`, not_applicable/skipped → `<skipped>`; evidence in `system-out`."""
    f = LocaleFormat(lang)
    run = doc["run"]
    root = ET.Element("testsuites", name=_attr(f"kbfix {run['id']}"))
    suites: dict[str, ET.Element] = {}
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    banner = stop_text(doc, f)
    run_suite = ET.SubElement(root, "testsuite", name="run", timestamp=_attr(run["started"]))
    props = ET.SubElement(run_suite, "properties")
    for key in ("id", "kind", "operator", "change_ticket", "approved_by", "state"):
        ET.SubElement(props, "property", name=key, value=_attr(run[key]))
    case = ET.SubElement(run_suite, "testcase", name="run completed without an early stop", classname="kbfix.run")
    if banner:
        el = ET.SubElement(case, "failure", message=_attr(banner), type="stopped_early")
        el.text = _attr(banner)
    run_suite.set("tests", "1")
    run_suite.set("failures", "1" if banner else "0")
    run_suite.set("skipped", "0")
    run_suite.set("errors", "0")
    totals["tests"] += 1
    totals["failures"] += 1 if banner else 0
    for host, adv in _units(doc):
        suite_id = adv["id"] if adv else "host"
        suite = suites.get(suite_id)
        if suite is None:
            suite = ET.SubElement(root, "testsuite", name=_attr(suite_id), timestamp=_attr(run["started"]))
            suite.set("tests", "0")
            suite.set("failures", "0")
            suite.set("skipped", "0")
            suite.set("errors", "0")
            suites[suite_id] = suite
        status = host["status"] if adv is None else adv["status"]
        case = ET.SubElement(
            suite,
            "testcase",
            name=_attr(host["name"]),
            classname=_attr(f"kbfix.{suite_id}.{host['site'] or 'default'}"),
        )
        seconds = _host_seconds(host)
        if seconds is not None:
            case.set("time", f"{seconds:.3f}")
        reason = adv["reason"] if adv else (host["error"] or {}).get("message", "")
        message = f"{f.status(status)}: {reason}"
        kind = None
        if status in FAILURE_STATUSES:
            kind = "failures"
            el = ET.SubElement(case, "failure", message=_attr(message), type=_attr(status))
            el.text = _attr(_evidence_text(adv) if adv else reason)
        elif status in SKIPPED_STATUSES:
            kind = "skipped"
            ET.SubElement(case, "skipped", message=_attr(message))
        if adv is not None:
            out = ET.SubElement(case, "system-out")
            out.text = _attr(f"{f.status(status)}: {reason}\n{_evidence_text(adv)}")
        for counted in ("tests", kind):
            if counted:
                suite.set(counted, str(int(suite.get(counted, "0")) + 1))
                totals[counted] += 1
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
