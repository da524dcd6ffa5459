"""The plan file: round trip of the exact actions, and clear errors for files that are not plans."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from kbfix.planfile import PlanDocument, PlanError
from playbooks.model import Finding, HostResult, InstallerRunOp, PackageRef, PlannedAction, Status


def _plan() -> PlanDocument:
    action = PlannedAction(
        id="KB954960-install", advisory="KB954960", kind="install_package", description="install",
        ops=[InstallerRunOp(path="C:\\kbfix\\x.exe", sha256="ab" * 32, arg=["/quiet"], log_path="C:\\x.log", timeout=60)],
        package=PackageRef(kb="KB954960", file="x.exe", sha256="ab" * 32, size=3),
        expected_exit_codes=[0, 3010], estimated_seconds=120,
    )
    f = Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason="old dll", planned=[action, action])
    return PlanDocument(run_id="r1", created=datetime(2026, 11, 28, 21, tzinfo=timezone.utc), kbfix_version="0.1.0",
                        inventory_hash="cd" * 32,
                        hosts=[HostResult(host="wsus01", status=Status.NON_COMPLIANT, facts_digest="ef" * 32,
                                          facts={"dll": {"version": "3.1.6001.65"}}, findings=[f])])


def test_round_trip_keeps_every_action_detail(tmp_path: Path) -> None:
    plan = _plan()
    path = plan.write(tmp_path / "sub" / "plan.json")
    back = PlanDocument.read(path)
    assert back == plan
    entry = back.host("wsus01")
    assert entry is not None and len(entry.planned) == 2 and entry.estimated_seconds == 240
    assert back.host("nope") is None
    assert list(tmp_path.glob("sub/.*")) == []  # no temp file left behind


@pytest.mark.parametrize(("text", "needle"), [
    ("{not json", "plan.json"),
    ('{"format": "other", "version": 1, "run_id": "r", "created": "2026-01-01T00:00:00Z", "kbfix_version": "0"}',
     "format"),
    ('{"run_id": "r", "created": "2026-01-01T00:00:00Z", "kbfix_version": "0", "hosts": [{"host": "h"}]}',
     "hosts.0.status"),
])
def test_bad_plan_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError, match=needle.replace(".", r"\.")):
        PlanDocument.read(path)


def test_digest_survives_the_file_and_changes_with_any_edit(tmp_path: Path) -> None:
    plan = _plan()
    path = plan.write(tmp_path / "plan.json")
    assert PlanDocument.read(path).digest() == plan.digest()
    edited = path.read_text(encoding="utf-8").replace('"non_compliant"', '"compliant"', 1)
    path.write_text(edited, encoding="utf-8")
    assert PlanDocument.read(path).digest() != plan.digest()


def test_a_kbfix_0_1_plan_is_refused_naming_its_version(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"format": "kbfix/plan", "version": 1, "run_id": "r", "created": "2026-01-01T00:00:00Z",'
                    ' "kbfix_version": "0.1.0", "hosts": []}', encoding="utf-8")
    with pytest.raises(PlanError, match=r"plan format version 1 \(written by kbfix 0\.1\.0\)"):
        PlanDocument.read(path)
