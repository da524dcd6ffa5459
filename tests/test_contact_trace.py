"""`--trace DIR` and `kbfix lab fixture-from-trace` (issue 17): a traced check of demo hosts over
real WinRM becomes a lab fixture whose check gives the same findings; secrets and nonces are
redacted and nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.run import RunOptions, run_check
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from kbfix.trace import REDACTED_NONCE, Tracer, ops_from_json, redact, trace_file_name, tracing_factory
from playbooks.model import HostResult
from winlab.fixtures import demo_site, load_fixtures
from winlab.from_trace import trace_files, write_fixture
from winlab.lab import Lab

TRACED = ["WSUS-SP1", "WSUS-SP1-OK", "WSUS-RTM", "CM07-SITE", "CM07-OK", "OFFICE-CL01", "WSUS-DK", "WSUS-CN",
          "WSUS-DOWN", "WSUS-LOCKED"]


def _check(hosts: list[Any], tmp: Path, tracer: Tracer | None = None) -> list[HostResult]:
    factory = tracing_factory(tracer) if tracer else None
    engine = PlaybookEngine(session_factory=factory) if factory else PlaybookEngine()
    with AuditStore.in_dir(tmp) as store:
        return run_check(hosts, engine, store, RunOptions(forks=4)).results


def _shape(results: list[HostResult]) -> dict[str, Any]:
    """What a check concluded per host: status, and per finding its verdict and evidence values
    and log line texts (byte offsets and times are not findings)."""
    out = {}
    for r in results:
        out[r.host] = (r.status.value, sorted(r.roles), [
            (f.advisory, f.status.value, f.variant, f.reason,
             [(e.probe, e.value, [ln.text for ln in e.lines]) for e in f.evidence])
            for f in r.findings])
    return out


def test_trace_of_demo_hosts_becomes_a_fixture_whose_check_matches(tmp_path: Path) -> None:
    trace_dir = tmp_path / "trace"
    hosts_all = [h for h in demo_site() if h.name in TRACED]
    with Lab(hosts_all, https=True, workdir=tmp_path / "lab1") as lab:
        hosts = load_inventory([lab.write_inventory(tmp_path / "inv1.yaml")]).select(None)
        original = _check(hosts, tmp_path / "s1", Tracer(trace_dir, "check"))
    files = trace_files(trace_dir)
    assert sorted(p.name for p in files) == sorted(trace_file_name(n) for n in TRACED)
    text = (trace_dir / trace_file_name("WSUS-SP1")).read_text(encoding="utf-8")
    assert "Secret-1" not in text  # the lab password never reaches a trace
    doc = json.loads(text)
    ex = doc["exchanges"][0]
    assert ex["request"]["nonce"] == ex["response"]["nonce"] == REDACTED_NONCE
    assert {r["op"] for r in ex["response"]["results"]} >= {"registry.values", "file.info", "log.scan"}

    fixture = write_fixture(files, tmp_path / "from-trace.yaml")
    rebuilt = load_fixtures(fixture)
    assert sorted(h.name for h in rebuilt) == sorted(TRACED)
    with Lab(rebuilt, https=True, workdir=tmp_path / "lab2") as lab:
        hosts = load_inventory([lab.write_inventory(tmp_path / "inv2.yaml")]).select(None)
        replayed = _check(hosts, tmp_path / "s2")
    assert _shape(replayed) == _shape(original)
    statuses = {r.host: r.status.value for r in original}
    assert statuses["WSUS-SP1"] == "non_compliant" and statuses["WSUS-SP1-OK"] == "compliant"
    # Hosts that would not open a session come back as the same failures.
    assert statuses["WSUS-DOWN"] == "unreachable" and statuses["WSUS-LOCKED"] == "failed"
    by_name = {h.name: h for h in rebuilt}
    assert by_name["WSUS-DOWN"].faults.connect == "refused" and by_name["WSUS-LOCKED"].faults.auth == "reject"


def test_redaction_changes_only_secrets() -> None:
    doc = {"a": "x Secret-1 y", "password": "p", "n": 3, "list": ["Secret-1", "keep"], "token": None}
    assert redact(doc, ["Secret-1"]) == {"a": "x *** y", "password": "***", "n": 3, "list": ["***", "keep"],
                                         "token": None}


def test_traced_request_ops_round_trip() -> None:
    from kbfix.trace import request_json
    from remoting.agent_protocol import op

    ops = [op("1", "file.info", path="C:\\x.dll", sha256=True), op("2", "log.scan", path="p", pattern=["a", "b"])]
    back = ops_from_json(json.loads(json.dumps(request_json(ops)))["ops"])
    assert back == ops


def test_cli_fixture_from_trace_rejects_a_non_trace(tmp_path: Path) -> None:
    bad = tmp_path / "x.trace.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    res = CliRunner().invoke(app, ["lab", "fixture-from-trace", str(tmp_path), "-o", str(tmp_path / "f.yaml")])
    assert res.exit_code == 2
    assert "not a kbfix trace" in res.output
    assert not (tmp_path / "f.yaml").exists()


@pytest.mark.parametrize("command", ["check", "plan"])
def test_cli_trace_option_writes_one_file_per_host(tmp_path: Path, command: str) -> None:
    hosts = [h for h in demo_site() if h.name in ("WSUS-SP1", "WSUS-DOWN")]
    with Lab(hosts, https=True, workdir=tmp_path / "lab") as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        args = ["-i", str(inv), "--state", str(tmp_path / "st"), "-q", command, "--trace", str(tmp_path / "tr")]
        if command == "plan":
            args += ["-o", str(tmp_path / "plan.json")]
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 4, res.output  # WSUS-DOWN is unreachable
    assert (tmp_path / "tr" / trace_file_name("WSUS-SP1")).is_file()
    # A host whose session never opened ran no agent request: its trace holds the error alone.
    down = json.loads((tmp_path / "tr" / trace_file_name("WSUS-DOWN")).read_text(encoding="utf-8"))
    assert [(e["phase"], e["request"], e["error"]["kind"]) for e in down["exchanges"]] == [("open", None, "unreachable")]
    res = CliRunner().invoke(app, ["lab", "fixture-from-trace", str(tmp_path / "tr"), "-o", str(tmp_path / "f.yaml"),
                                   "--account", "ops=Pw-1"])
    assert res.exit_code == 0, res.output
    rebuilt = {h.name: h for h in load_fixtures(tmp_path / "f.yaml")}
    assert set(rebuilt) == {"WSUS-SP1", "WSUS-DOWN"} and rebuilt["WSUS-DOWN"].faults.connect == "refused"
    assert dict(rebuilt["WSUS-SP1"].accounts) == {"ops": "Pw-1"}
