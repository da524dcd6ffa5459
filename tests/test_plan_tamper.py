"""A plan file is a request, not a program (issue 20, findings 1 and 2), through the lab.

- Every tampering of plan.json (installer path, arguments, op names; a forged `status:
  compliant`; a hand-written plan without `inventory_hash`) is refused by `kbfix apply --plan`
  with exit 2 and NOTHING sent: the lab counts zero HTTP requests.
- Even a tampered plan whose digest an attacker managed to record in the store sends only what
  kbfix rebuilds from the playbook, the manifest and fresh facts, and the host's status comes
  from those fresh facts (defence in depth behind the digest check).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inventory import load_inventory
from kbfix.cli import app
from kbfix.planfile import PlanDocument
from kbfix.run import RunOptions, run_apply, run_plan
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import Status
from tests.test_run_lab import demo_text, make_packages
from winlab.fixtures import DEMO_SITE, load_host_fixture_text
from winlab.lab import Lab

HOSTS = ["WSUS-SP1", "WSUS-RTM"]  # an installer to run, and WSUS workaround steps


def _requests(lab: Lab) -> int:
    return sum(sum(lab.records(n).requests.values()) for n in HOSTS)


def _install_action(plan: dict[str, Any]) -> dict[str, Any]:
    host = next(h for h in plan["hosts"] if h["host"] == "WSUS-SP1")
    return next(p for f in host["findings"] for p in f["planned"] if p["kind"] == "install_package")


def _edit_installer(plan: dict[str, Any]) -> None:
    run = next(o for o in _install_action(plan)["ops"] if o["name"] == "installer.run")
    run["path"] = "C:\\Windows\\System32\\cmd.exe"
    run["arg"] = ["/c", "net", "user", "mallory", "P@ss", "/add"]


def _edit_upload_target(plan: dict[str, Any]) -> None:
    upload = next(o for o in _install_action(plan)["ops"] if o["name"] == "file.upload")
    upload["path"] = "C:\\Windows\\System32\\drivers\\etc\\hosts"


def _workaround_step(plan: dict[str, Any]) -> dict[str, Any]:
    host = next(h for h in plan["hosts"] if h["host"] == "WSUS-RTM")
    return next(p for f in host["findings"] for p in f["planned"] if p["kind"].startswith("wsus_"))


def _rename_ops(plan: dict[str, Any]) -> None:
    """An op name outside kbfix's op vocabulary (the plan file's typed ops refuse it at read)."""
    _workaround_step(plan)["ops"] = [{"name": "service.restart", "service": "WsusService"}]


def _swap_ops(plan: dict[str, Any]) -> None:
    """A known op name in an action of another kind: a WSUS workaround step that would run a program."""
    _workaround_step(plan)["ops"] = [{"name": "installer.run", "path": "C:\\Windows\\System32\\cmd.exe",
                                      "sha256": "0" * 64, "arg": ["/c", "whoami"], "log_path": "C:\\x.log",
                                      "timeout": 60}]


def _forge_compliant(plan: dict[str, Any]) -> None:
    for h in plan["hosts"]:
        h["status"] = "compliant"
        for f in h["findings"]:
            f["status"], f["planned"] = "compliant", []


def _hand_written(plan: dict[str, Any]) -> None:
    plan.clear()
    plan.update({"run_id": "x", "created": "2026-11-27T00:00:00Z", "kbfix_version": "0.2.0",
                 "hosts": [{"host": n, "status": "compliant"} for n in HOSTS]})


@pytest.mark.parametrize("tamper", [_edit_installer, _edit_upload_target, _rename_ops, _swap_ops, _forge_compliant,
                                    _hand_written])
def test_tampered_plan_is_refused_with_nothing_sent(tmp_path: Path, tamper: Callable[[dict[str, Any]], None]) -> None:
    packages = make_packages(tmp_path / "pkgs")
    state = tmp_path / "state"
    runner = CliRunner()
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        base = ["-q", "-i", str(inv), "--state", str(state), "--limit", ":".join(HOSTS)]
        r = runner.invoke(app, [*base, "plan", "--packages", str(packages), "-o", str(tmp_path / "plan.json")])
        assert r.exit_code == 3, r.output  # both hosts need work
        doc = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
        tamper(doc)
        (tmp_path / "plan.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        before = _requests(lab)
        r = runner.invoke(app, [*base, "apply", "--plan", str(tmp_path / "plan.json"), "--packages", str(packages)])
        assert r.exit_code == 2, r.output
        if tamper is _rename_ops:
            assert "service.restart" in r.output and "does not match any of the expected tags" in r.output
        else:
            assert "not a plan recorded in the audit store" in r.output and "nothing was sent" in r.output
        assert _requests(lab) == before  # not one HTTP request: nothing contacted
        assert all(lab.records(n).mutations == [] for n in HOSTS)
    with AuditStore.in_dir(state) as store:
        assert [r.kind for r in store.list_runs()] == ["plan"]  # no apply run was even started


def test_a_tampered_plan_with_a_recorded_digest_still_sends_only_rebuilt_ops(tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab, \
            AuditStore.in_dir(tmp_path / "state") as store:
        hosts = [h for h in load_inventory([lab.write_inventory(tmp_path / "inv.yaml")]).select(None) if h.name in HOSTS]
        engine = PlaybookEngine(packages_dir=packages)
        made = run_plan(hosts, engine, store, RunOptions())
        assert made.plan is not None
        doc = made.plan.model_dump(mode="json")
        _edit_installer(doc)
        _edit_upload_target(doc)
        _swap_ops(doc)
        rtm = next(h for h in doc["hosts"] if h["host"] == "WSUS-RTM")
        rtm["status"] = "compliant"  # a forged verdict on a host that also keeps its (approved) actions
        forged = PlanDocument.model_validate(doc)
        store.record_plan_document(made.info.id, forged.digest())  # as if the attacker could also write the store
        out = run_apply(hosts, engine, store, RunOptions(), plan=forged)
        by = {r.host: r for r in out.results}
        sp1 = lab.records("WSUS-SP1").mutations
        assert [m.op for m in sp1] == ["file.upload", "installer.run"]
        assert all("System32" not in m.detail for m in sp1) and "kbfix-WSUS3.0SP1-KB954960-x64.exe" in sp1[-1].detail
        rtm_ops = {m.op for m in lab.records("WSUS-RTM").mutations}
        rebuilt = {o.name for p in made.plan.host("WSUS-RTM").planned for o in p.ops}  # type: ignore[union-attr]
        assert rtm_ops and rtm_ops <= rebuilt and "installer.run" not in rtm_ops  # the WSUS steps, nothing else
        assert by["WSUS-SP1"].status is Status.REMEDIATED
        assert by["WSUS-RTM"].status is Status.MITIGATED  # decided from fresh facts after the real steps


def test_a_forged_compliant_verdict_with_a_recorded_digest_is_re_read_not_believed(tmp_path: Path) -> None:
    packages = make_packages(tmp_path / "pkgs")
    with Lab(load_host_fixture_text(demo_text(time_scale=0.05), "demo", DEMO_SITE.parent)) as lab, \
            AuditStore.in_dir(tmp_path / "state") as store:
        hosts = [h for h in load_inventory([lab.write_inventory(tmp_path / "inv.yaml")]).select(None)
                 if h.name == "WSUS-SP1"]
        engine = PlaybookEngine(packages_dir=packages)
        made = run_plan(hosts, engine, store, RunOptions())
        assert made.plan is not None
        doc = made.plan.model_dump(mode="json")
        _forge_compliant(doc)
        forged = PlanDocument.model_validate(doc)
        store.record_plan_document(made.info.id, forged.digest())
        requests_before = sum(lab.records("WSUS-SP1").requests.values())
        out = run_apply(hosts, engine, store, RunOptions(), plan=forged)
        [r] = out.results
        assert sum(lab.records("WSUS-SP1").requests.values()) > requests_before  # re-gathered, not taken on trust
        assert r.status is Status.NON_COMPLIANT and lab.records("WSUS-SP1").mutations == []
        assert any("not in the reviewed plan" in n for f in r.findings for n in f.notes)
