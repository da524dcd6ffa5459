"""Waivers: a waived finding is reported as `waived` with its justification and counted apart; an
expired waiver is ignored with a warning naming it; the file is read safely (no aliases, anchors,
oversize files) and a bad one is refused naming file, line and field, before any host is contacted."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kbfix.cli import app
from kbfix.report import build_document, render
from kbfix.report.sample import ADVISORIES, hosts, run_info
from kbfix.store import AuditStore
from kbfix.waivers import WAIVER_FILE_MAX, WaiverError, load_waivers, parse_waivers

WAIVERS = b"""\
# change board decisions
waivers:
  - host: "cm-cph-*"
    advisory: KB954474
    justification: "Legacy SMS 2003 clients retired in January; legacy sync disabled"
    approved_by: "CAB 2026-114, J. Jensen"
    expires: 2027-01-31
  - host: wsus-ber-01.corp.example
    advisory: KB954960
    justification: "Reboot scheduled with the datacentre move"
    approved_by: "CAB 2026-101"
    expires: 2026-11-01
"""


def _doc(data: bytes = WAIVERS) -> dict:
    return build_document(run_info(), hosts(), ADVISORIES, waivers=parse_waivers(data, "waivers.yml"))


def test_a_waiver_and_an_expired_waiver() -> None:
    wf = parse_waivers(WAIVERS, "waivers.yml")
    doc = build_document(run_info(), hosts(), ADVISORIES, waivers=wf)
    by = {h["name"]: h for h in doc["hosts"]}
    cm = {a["id"]: a for a in by["cm-cph-01.corp.example"]["advisories"]}
    waived = cm["KB954474"]
    assert waived["status"] == "waived"
    assert waived["waiver"] == {
        "justification": "Legacy SMS 2003 clients retired in January; legacy sync disabled",
        "approved_by": "CAB 2026-114, J. Jensen", "expires": "2027-01-31", "source": "waivers.yml:3",
        "waived_status": "non_compliant",
    }
    # the expired waiver (void from 2026-11-01, the run started 2026-11-23) is ignored and named
    ber = by["wsus-ber-01.corp.example"]["advisories"][0]
    assert ber["status"] == "pending_reboot" and ber["waiver"] is None
    assert wf.warnings == ["waiver waivers.yml:8 (host wsus-ber-01.corp.example, KB954960, approved by CAB 2026-101) "
                           "expired on 2026-11-01; ignored"]
    assert doc["waivers"]["warnings"] == wf.warnings
    assert [(e["matched"], e["expired"]) for e in doc["waivers"]["entries"]] == [(1, False), (0, True)]
    # counted apart: out of the compliance arithmetic, not a failure
    sm = doc["summary"]
    plain = build_document(run_info(), hosts(), ADVISORIES)["summary"]
    assert sm["waived"] == sm["by_status"]["waived"] == 1
    assert sm["by_status"]["non_compliant"] == plain["by_status"]["non_compliant"] - 1
    assert sm["failures"] == plain["failures"] - 1
    assert sm["compliance_percent"] == round(100 * 3 / 8, 2) and plain["compliance_percent"] == round(100 * 3 / 9, 2)
    # every format shows it
    html = render(doc, "html").decode()
    assert "Legacy SMS 2003 clients retired in January" in html and "expired, ignored" in html
    assert "Legacy SMS 2003 clients retired in January" in render(doc, "md").decode()
    assert "CAB 2026-114" in render(doc, "csv").decode("utf-8-sig")
    assert "Afventer genstart" in render(doc, "html", lang="da").decode()  # the expired one stays pending_reboot


def test_operational_faults_are_never_waived() -> None:
    data = b"waivers:\n  - {host: '*', advisory: KB954960, justification: j, approved_by: a, expires: 2099-01-01}\n"
    doc = _doc(data)
    statuses = {a["status"] for h in doc["hosts"] for a in h["advisories"] if a["id"] == "KB954960"}
    assert "failed" in statuses  # wsus-ber-03's installer failure stays visible
    assert "waived" in statuses  # skipped and pending_reboot ones are waived
    assert doc["summary"]["hosts_by_status"]["unreachable"] == 1  # a host without findings is not waived


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"waivers:\n  - host: a\n    advisory: KB1\n    justification: j\n    approved_by: a\n", ":2: field 'expires' is required"),
        (b"waivers:\n  - {host: a, advisory: KB1, justification: j, approved_by: a, expires: soon}\n", ":2: expires: 'soon'"),
        (b"waivers:\n  - {host: a, advisory: KB1, justification: '', approved_by: a, expires: 2027-01-01}\n", "'justification' is required"),
        (b"waivers:\n  - host: a\n    hots: b\n", ":3: unknown field 'hots'"),
        (b"other: 1\n", "the top level holds one key"),
        (b"waivers: {a: 1}\n", "must be a list"),
        (b"a: &x [1]\nb: *x\n", ":2: YAML aliases expand to more than 0 nodes"),  # inventory.safeyaml
        (b"waivers:\n  - &x {host: a}\n", ":2: YAML anchors are not allowed"),  # our own loader
        (b"waivers:\n  - *x\n", ":2: YAML aliases expand"),
        (b"waivers:\n  - !!python/object:os.system {}\n", "tag 'tag:yaml.org,2002:python/object:os.system' is not allowed"),
        (b"waivers:\n  - {host: !!binary aGk=, advisory: A, justification: j, approved_by: a, expires: 2027-01-01}\n",
         "expected text"),
        (b"\xff\xfe", "not UTF-8"),
        (b"waivers: [\n", "waivers.yml"),
    ],
)
def test_bad_files_refused_with_place(text: bytes, message: str) -> None:
    with pytest.raises(WaiverError) as exc:
        parse_waivers(text, "waivers.yml")
    assert message in str(exc.value) and str(exc.value).startswith("waivers.yml")


def test_deep_nesting_refused_before_composing() -> None:
    # block nesting: inventory.safeyaml's depth guard names the line; flow nesting: libyaml's own
    # limit. Either way a WaiverError, never a RecursionError from PyYAML's recursive composer.
    deep = b"waivers:\n" + b"".join(b" " * (2 * i) + b"- x:\n" for i in range(1, 30))
    with pytest.raises(WaiverError, match=r"waivers.yml:6: YAML nesting is deeper than 10 levels"):
        parse_waivers(deep, "waivers.yml")
    with pytest.raises(WaiverError, match="nesting depth"):
        parse_waivers(b"waivers: " + b"[" * 5000, "waivers.yml")


def test_alias_bomb_and_oversize_refused(tmp_path: Path) -> None:
    bomb = b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n" + b"".join(
        f"l{i}: &l{i} [*{'c' if i == 0 else f'l{i - 1}'}, *{'c' if i == 0 else f'l{i - 1}'}]\n".encode() for i in range(40))
    with pytest.raises(WaiverError, match="alias bomb"):
        parse_waivers(bomb)
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (WAIVER_FILE_MAX + 1))
    with pytest.raises(WaiverError, match="at most"):
        load_waivers(big)
    with pytest.raises(WaiverError, match="cannot read"):
        load_waivers(tmp_path / "missing.yml")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parser_raises_only_waiver_error(data: bytes) -> None:
    try:
        wf = parse_waivers(data)
    except WaiverError:
        return
    for w in wf.waivers:
        assert w.host and w.advisory and w.justification and w.approved_by


def test_expiry_is_judged_at_the_run_start() -> None:
    w = parse_waivers(b"- {host: h, advisory: A, justification: j, approved_by: a, expires: 2026-11-24}\n").waivers[0]
    assert not w.expired(datetime(2026, 11, 23, 23, 59, tzinfo=timezone.utc))
    assert w.expired(datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc))
    assert w.matches("H", "A") and not w.matches("h2", "A") and not w.matches("h", "B")


def test_cli_report_with_waivers_warns_and_bad_file_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    info = run_info()
    with AuditStore.in_dir(state) as store:
        store.begin_run(info)
        for r in hosts():
            store.record_host(info.id, r)
        store.end_run(info.id, "completed")
    wfile = tmp_path / "waivers.yml"
    wfile.write_bytes(WAIVERS)
    runner = CliRunner()
    r = runner.invoke(app, ["--state", str(state), "report", "latest", "--waivers", str(wfile), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert f"waiver {wfile}:8" in r.output and "expired on 2026-11-01; ignored" in r.output
    assert '"waived"' in r.output
    wfile.write_bytes(b"waivers:\n  - host: a\n")
    r = runner.invoke(app, ["--state", str(state), "report", "latest", "--waivers", str(wfile)])
    assert r.exit_code == 2 and f"{wfile}:2" in r.output


def test_cli_check_over_the_lab_reports_waived(tmp_path: Path) -> None:
    import hashlib
    import json

    from winlab.fixtures import demo_site
    from winlab.lab import Lab

    wfile = tmp_path / "waivers.yml"
    wfile.write_bytes(b"waivers:\n  - {host: wsus-sp1, advisory: KB954960, justification: 'replaced in Q1',"
                      b" approved_by: CAB-9, expires: 2099-12-31}\n")
    state = tmp_path / "state"
    with Lab(demo_site()) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        r = CliRunner().invoke(app, ["-q", "-i", str(inv), "--state", str(state), "--limit", "WSUS-SP1", "check",
                                     "--format", "json", "--waivers", str(wfile), "--change-ticket", "CHG-1"])
    doc = json.loads(r.output[r.output.index("{"):])
    by = {h["name"]: h for h in doc["hosts"]}
    kb = next(a for a in by["WSUS-SP1"]["advisories"] if a["id"] == "KB954960")
    assert kb["status"] == "waived" and kb["waiver"]["waived_status"] == "non_compliant"
    assert kb["waiver"]["source"] == f"{wfile}:2"
    assert doc["run"]["options"]["waivers_sha256"] == hashlib.sha256(wfile.read_bytes()).hexdigest()
    assert doc["run"]["change_ticket"] == "CHG-1"
    assert r.exit_code == 3  # exit codes follow the hosts' own state; a waiver is a reporting decision


def test_a_waiver_naming_only_an_unassessed_host_warns(tmp_path: Path) -> None:
    """QA: a waiver for an unreachable host was silently unused (lab: WSUS-DOWN refuses connections)."""
    import json

    from winlab.fixtures import demo_site
    from winlab.lab import Lab

    wfile = tmp_path / "waivers.yml"
    wfile.write_bytes(b"waivers:\n  - {host: wsus-down, advisory: KB954960, justification: 'decommissioned in Q1',"
                      b" approved_by: CAB-9, expires: 2099-12-31}\n"
                      b"  - {host: wsus-sp1, advisory: KB954960, justification: 'replaced in Q1',"
                      b" approved_by: CAB-9, expires: 2099-12-31}\n")
    state = tmp_path / "state"
    with Lab([h for h in demo_site() if h.name in ("WSUS-DOWN", "WSUS-SP1")]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        r = CliRunner().invoke(app, ["-q", "-i", str(inv), "--state", str(state), "check"])
        assert r.exit_code == 4, r.output
    r = CliRunner().invoke(app, ["--state", str(state), "report", "latest", "--waivers", str(wfile), "--format", "json"])
    assert r.exit_code == 0, r.output
    warning = (f"waiver {wfile}:2 (host wsus-down, KB954960, approved by CAB-9) matched no finding: "
               "WSUS-DOWN (unreachable) not assessed in this run")
    assert f"kbfix: warning: {warning}" in r.output  # stderr
    doc = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    assert any(w.startswith(warning) for w in doc["waivers"]["warnings"])  # the report's waiver section
    assert not any(f"{wfile}:4" in w for w in doc["waivers"]["warnings"])  # the used one is not named
