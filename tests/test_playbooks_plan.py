"""plan(), the package manifest, the third (YAML-only) advisory, and verify's merge (pure)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from playbooks import (
    HostContext,
    ManifestError,
    assess,
    gather_ops,
    load_packages,
    load_playbooks,
    merge_verification,
    plan,
)
from playbooks.model import ExecutedAction, Status
from playbooks.version import Version, VersionRange
from tests.playbooks.labhost import LabHostSpec
from tests.test_playbooks_assess import site, wsus

TEST_DIR = Path(__file__).parent / "playbooks"


def write_packages(tmp: Path, entries: list[dict], *, corrupt: str | None = None) -> Path:
    lines = ["packages:"]
    for e in entries:
        data = f"dummy installer {e['file']}".encode()
        (tmp / e["file"]).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest() if e["file"] != corrupt else "ab" * 32
        lines.append(f"  - kb: {e['kb']}")
        lines.append(f"    file: {e['file']}")
        lines.append(f"    sha256: {digest}")
        for k in ("fits", "arch", "fits_parts", "args"):
            if k in e:
                lines.append(f"    {k}: {e[k]!r}" if isinstance(e[k], str) else f"    {k}: {e[k]}")
    (tmp / "manifest.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp


@pytest.fixture
def packages(tmp_path):
    return load_packages(write_packages(tmp_path, [
        {"kb": "KB954960", "file": "WSUS3.0SP1-KB954960-x64.exe", "fits": ">=3.1.6001.0, <3.1.6002", "arch": "x64",
         "args": ["/quiet", "/norestart"]},
        {"kb": "KB954474", "file": "SCCM2007-SP1-KB954474-x86.msp", "fits": "4.0.6221", "fits_parts": 3},
    ]))


def planned(host: LabHostSpec, packages, name: str = "H", books=None):
    books = books or load_playbooks()
    ctx = HostContext(name)
    return plan(books, assess(books, ctx, host.respond(gather_ops(books, ctx))), packages)


def test_version_type():
    assert Version.parse("3.1.6001.66") > Version.parse("3.1.6001.9")
    assert Version.parse("4.00.6221") == Version.parse("4.0.6221.0000")
    assert Version.parse("4.00.6221.1000").prefix(3) == Version.parse("4.0.6221")
    assert VersionRange.parse("4.0.6221", 3).contains("4.00.6221.1000")
    assert not VersionRange.parse(">=3.1.6001.0, <3.1.6002").contains("3.0.6000.374")
    with pytest.raises(ValueError):
        Version.parse("3.1.x")


def test_sp1_plan_uploads_then_runs_with_hash_and_is_irreversible(packages):
    a = planned(wsus(), packages)
    f = a.finding("KB954960")
    (act,) = f.planned
    assert act.kind == "install_package" and act.package.file == "WSUS3.0SP1-KB954960-x64.exe"
    assert [o["name"] for o in act.ops] == ["file.upload", "installer.run"]
    run = act.ops[1]["args"]
    assert run["sha256"] == act.package.sha256 and run["path"].endswith("kbfix-WSUS3.0SP1-KB954960-x64.exe")
    assert act.ops[0]["args"]["path"] == run["path"]
    assert act.expected_exit_codes == [0, 3010, 1641]
    assert act.reversible is False and "cannot be uninstalled separately" in act.note


U1 = "6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d01"
U2 = "6c8b5d2e-0f1a-4b3c-9d4e-5f6a7b8c9d02"


def test_rtm_plan_is_one_workaround_op_over_every_match():
    h = wsus("3.0.6000.374", "3.0.6000.374", wsus_api=True,
             wsus_updates=[{"id": U1, "title": "Office 2003 Service Pack 1", "declined": False},
                           {"id": U2, "title": "Office 2003 Service Pack 1", "declined": True}])
    f = planned(h, None).finding("KB954960")
    (act,) = f.planned  # one action, one op: a stop between steps cannot leave SP1 approved
    assert act.kind == "wsus_workaround" and "always ends declined" in act.description
    assert act.ops == [{"name": "wsus.workaround", "args": {"id": [U1, U2], "group": "All Computers"}}]
    h.wsus_replica = True
    f = planned(h, None).finding("KB954960")
    assert f.planned == [] and any("replica" in n and "upstream" in n for n in f.notes)
    h.wsus_replica = False
    h.wsus_updates[0]["requires_license"] = True
    f = planned(h, None).finding("KB954960")
    assert f.planned == [] and any("RequiresLicenseAgreementAcceptance" in n for n in f.notes)
    h.wsus_api = False
    f = planned(h, None).finding("KB954960")
    assert f.planned == [] and any("administration API" in n for n in f.notes)


def test_missing_or_unfitting_package_is_a_note_per_host(packages, tmp_path):
    f = planned(wsus(), None).finding("KB954960")
    assert f.status == Status.NON_COMPLIANT and f.planned == []
    assert any(n.startswith("package for KB954960 missing") for n in f.notes)
    h = wsus()
    h.arch = "x86"  # only an x64 package is listed
    f = planned(h, packages).finding("KB954960")
    assert f.planned == [] and any("none fits" in n for n in f.notes)


def test_configmgr_plan_compares_three_parts(packages):
    f = planned(site("4.00.6221.1000"), packages).finding("KB954474")
    assert f.planned[0].package.file == "SCCM2007-SP1-KB954474-x86.msp"
    f = planned(site("4.00.5931.0000"), packages).finding("KB954474")
    assert f.planned == [] and any("none fits" in n for n in f.notes)


def test_manifest_errors_name_file_line_and_field(tmp_path):
    d = write_packages(tmp_path, [{"kb": "KB954960", "file": "a.exe"}, {"kb": "KB954474", "file": "b.msp"}], corrupt="b.msp")
    with pytest.raises(ManifestError) as e:
        load_packages(d)
    assert e.value.field == "sha256" and e.value.line == 7 and "manifest.yaml:7" in str(e.value)
    (d / "manifest.yaml").write_text("packages:\n  - kb: 954960\n    file: a.exe\n    sha256: abc\n")
    with pytest.raises(ManifestError) as e:
        load_packages(d)
    assert e.value.field == "kb" and e.value.line == 2
    (d / "manifest.yaml").write_text(f"packages:\n  - kb: KB1\n    file: gone.exe\n    sha256: {'a' * 64}\n")
    with pytest.raises(ManifestError) as e:
        load_packages(d)
    assert e.value.field == "file" and e.value.line == 3
    (d / "manifest.yaml").write_text(f"packages:\n  - kb: KB1\n    file: a.exe\n    sha256: {'1' * 64}\n")
    with pytest.raises(ManifestError, match="quote the SHA-256") as e:
        load_packages(d)
    assert e.value.line == 4


def test_third_advisory_is_yaml_only(tmp_path):
    books = load_playbooks(["KB999999"], extra_dirs=[TEST_DIR])
    assert [b.id for b in books] == ["KB999999"]
    key = "HKLM\\SOFTWARE\\Contoso\\SyncAgent"
    h = LabHostSpec(registry={key: {"InstallDir": "C:\\Contoso"}}, files={"C:\\Contoso\\bin\\syncagent.exe": "2.1.299.0"},
                 logs={"C:\\Contoso\\logs\\sync.log": "2024-01-02 03:04:05.000 UTC\tError\tsvc\tSyncEngine.Merge\thr=0x80990001\r\n"})
    pk = load_packages(write_packages(tmp_path, [{"kb": "KB999999", "file": "contoso-KB999999.exe", "fits": "<2.1.300.5",
                                                  "args": ["/s", "/log={log}"]}]))  # an .exe's switches: the manifest's
    a = planned(h, pk, books=books)
    f = a.finding("KB999999")
    assert f.status == Status.NON_COMPLIANT and "E_SYNC_DUP" in f.reason
    assert f.evidence[1].lines[0].timestamp == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    run = f.planned[0].ops[-1]["args"]
    assert run["arg"] == ["/s", f"/log={run['log_path']}"]
    h.files["C:\\Contoso\\bin\\syncagent.exe"] = "2.1.300.5"
    assert planned(h, pk, books=books).finding("KB999999").status == Status.COMPLIANT


def _executed(outcome: str, action_id: str = "KB954960-1") -> ExecutedAction:
    return ExecutedAction(action_id=action_id, outcome=outcome, exit_code=0, started=datetime(2008, 8, 2, tzinfo=timezone.utc))


def _after(host: LabHostSpec, books):
    ctx = HostContext("H")
    return assess(books, ctx, host.respond(gather_ops(books, ctx)))


@pytest.mark.parametrize(
    ("outcome", "dll", "status", "words"),
    [
        ("success", "3.1.6001.66", Status.REMEDIATED, "verified"),
        ("reboot_required", "3.1.6001.66", Status.PENDING_REBOOT, ""),
        ("reboot_required", "3.1.6001.65", Status.PENDING_REBOOT, "reboot"),
        ("success", "3.1.6001.65", Status.FAILED, "1 Aug 2008"),
        ("failed", "3.1.6001.65", Status.FAILED, ""),
        ("unknown", "3.1.6001.66", Status.REMEDIATED, ""),
        ("unknown", "3.1.6001.65", Status.UNKNOWN, ""),
    ],
)
def test_verify_merge(packages, outcome, dll, status, words):
    books = load_playbooks()
    before = planned(wsus(), packages).findings
    for f in before:
        if f.advisory == "KB954960":
            f.executed.append(_executed(outcome))
            if outcome == "failed":
                f.status = Status.FAILED
    after = merge_verification(books, before, _after(wsus(dll=dll), books))
    f = next(x for x in after if x.advisory == "KB954960")
    assert f.status == status
    assert words in f.reason
    assert f.verification and f.executed


def test_verify_workaround_is_mitigated_and_followup_for_kb954474(packages):
    books = load_playbooks()
    h = wsus("3.0.6000.374", "3.0.6000.374", wsus_api=True,
             wsus_updates=[{"id": U1, "title": "Office 2003 Service Pack 1", "declined": True, "approvals": []}])
    before = planned(h, None).findings
    f = next(x for x in before if x.advisory == "KB954960")
    f.executed += [_executed("success", p.id) for p in f.planned]
    merged = next(x for x in merge_verification(books, before, _after(h, books)) if x.advisory == "KB954960")
    assert merged.status == Status.MITIGATED and "approve" in merged.reason
    # KB954474: registered after install; the success sync line is dated after the install → found
    s_before = planned(site(), packages).findings
    g = next(x for x in s_before if x.advisory == "KB954474")
    g.executed.append(ExecutedAction(action_id="KB954474-1", outcome="success", started=datetime(2008, 7, 10, 12, tzinfo=timezone.utc)))
    from tests.test_playbooks_assess import WSYNC_BAD, WSYNC_OK
    done = merge_verification(books, s_before, _after(site(hotfix=True, log=WSYNC_BAD + WSYNC_OK), books))
    g2 = next(x for x in done if x.advisory == "KB954474")
    assert g2.status == Status.REMEDIATED and any("successful synchronization after" in n for n in g2.notes)
    done = merge_verification(books, s_before, _after(site(hotfix=True), books))
    g3 = next(x for x in done if x.advisory == "KB954474")
    assert any("next full (scheduled) sync" in n for n in g3.notes)


def test_unc_source_is_refused_at_plan_time(tmp_path):
    # A WinRM logon has no delegated credentials: the second hop to \\files is anonymous (issue 13 item 7).
    (tmp_path / "manifest.yaml").write_text(
        "packages:\n  - kb: KB954960\n    file: WSUS3.0SP1-KB954960-x64.exe\n"
        f"    sha256: '{'c' * 64}'\n    source: '\\\\files\\patches\\WSUS3.0SP1-KB954960-x64.exe'\n"
        "    args: ['/quiet', '/log:{log}']\n", encoding="utf-8")
    f = planned(wsus(), load_packages(tmp_path)).finding("KB954960")
    assert f.planned == [] and any("UNC source" in n and "delegated credentials" in n for n in f.notes)


def test_exe_needs_manifest_switches_and_msi_gets_a_verbose_log(tmp_path):
    d = write_packages(tmp_path, [{"kb": "KB954960", "file": "WSUS3.0SP1-KB954960-x64.exe", "fits": ">=3.1.6001.0, <3.1.6002"},
                                  {"kb": "KB954474", "file": "SCCM2007-SP1-KB954474-x86.msp", "fits": "4.0.6221", "fits_parts": 3}])
    books = load_playbooks()
    f = planned(wsus(), load_packages(d), books=books).finding("KB954960")
    assert f.planned == [] and any("needs its silent and log switches" in n for n in f.notes)
    g = planned(site(), load_packages(d), books=books).finding("KB954474")
    run = g.planned[0].ops[-1]["args"]
    # playbook defaults for msiexec, then /l*v <log> (Windows Installer command-line options)
    assert run["arg"] == ["/quiet", "/norestart", "/l*v", run["log_path"]]
