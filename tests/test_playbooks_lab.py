"""The playbooks end to end against winlab's demo site, through HTTP with the real pywinrm client.

check classifies every demo host as its fixture intends; apply (packages from a temp dir with
dummy installer bytes and their real SHA-256; the lab's installer fixture matches by file name)
fixes each non-compliant host; verify confirms; a second check shows no non_compliant host and
the lab records no mutating op for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from playbooks import (
    HostContext,
    apply,
    assess,
    gather_ops,
    link_clients,
    load_packages,
    load_playbooks,
    plan,
    verify,
)
from playbooks.history import HostHistory
from playbooks.model import ExecutedAction, PlannedAction, Status
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.errors import AuthRejectedError, RemotingError, UnreachableError
from remoting.session import AgentSession

lab_mod = pytest.importorskip("winlab.lab")
fixtures_mod = pytest.importorskip("winlab.fixtures")

# The fixture's intent (winlab/fixtures/demo-site.yaml `roles_hint` comments), per advisory.
EXPECTED = {
    "WSUS-SP1": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-SP1-OK": {"KB954960": Status.COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-RTM": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "CM07-SITE": {"KB954960": Status.NOT_APPLICABLE, "KB954474": Status.NON_COMPLIANT},
    "CM07-OK": {"KB954960": Status.NOT_APPLICABLE, "KB954474": Status.COMPLIANT},
    "OFFICE-CL01": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "HEALTHY-CL02": {"KB954960": Status.NOT_APPLICABLE, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-DK": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-DE": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-NL": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
    "WSUS-CN": {"KB954960": Status.NON_COMPLIANT, "KB954474": Status.NOT_APPLICABLE},
}
UNREACHABLE = {"WSUS-DOWN": UnreachableError, "WSUS-LOCKED": AuthRejectedError}
AFTER = {"WSUS-RTM": Status.MITIGATED}


class ListJournal:
    """An in-memory Journal: (event, host, action id, outcome) in call order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str | None]] = []
        self.done: list[tuple[str, PlannedAction, ExecutedAction]] = []

    def intent(self, host: str, action: PlannedAction) -> None:
        self.events.append(("intent", host, action.id, None))

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        self.events.append(("result", host, action.id, executed.outcome))
        self.done.append((host, action, executed))

    def history(self, host: str) -> HostHistory:
        """What kbfix's audit store would answer for `host` (playbooks.history)."""
        return HostHistory.from_events((a.kind, e.outcome, e.ended or e.started) for h, a, e in self.done if h == host)


def _packages(tmp: Path) -> Path:
    entries = [
        ("KB954960", "WSUS3.0SP1-KB954960-x64.exe", ">=3.1.6001.0, <3.1.6002", "[x64]", 4),
        ("KB954960", "WSUS3.0SP1-KB954960-x86.exe", ">=3.1.6001.0, <3.1.6002", "[x86]", 4),
        ("KB954474", "SCCM2007SP1-KB954474-x86.msp", "4.0.6221", "[x86, x64]", 3),
    ]
    lines = ["packages:"]
    for kb, name, fits, arch, parts in entries:
        data = f"dummy installer for {name}\n".encode() * 1000  # ~30 KiB: a real multi-request upload at small chunks
        (tmp / name).write_bytes(data)
        lines += [f"  - kb: {kb}", f"    file: {name}", f"    sha256: '{hashlib.sha256(data).hexdigest()}'",
                  f"    fits: '{fits}'", f"    fits_parts: {parts}", f"    arch: {arch}", "    args: ['/quiet', '/norestart']"]
    (tmp / "manifest.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    with lab_mod.Lab(fixtures_mod.demo_site()) as running:
        yield running


def _endpoint(lab, name: str) -> Endpoint:
    ep = lab.endpoints[name]
    return Endpoint(host=name, address=ep.address, port=ep.port, scheme="http", transport="ntlm",
                    username="LAB\\kbfix", password=Secret("Secret-1"), timeouts=Timeouts(connect=3, operation=10, read=15, command=60))


def _check(lab, books, journal: ListJournal | None = None) -> tuple[dict, dict]:
    out, errors = {}, {}
    for name in sorted(lab.endpoints):
        ctx = HostContext(name, history=journal.history(name) if journal else HostHistory())
        try:
            with AgentSession(_endpoint(lab, name), check_mode=True) as s:
                out[name] = assess(books, ctx, s.run(gather_ops(books, ctx)))
        except RemotingError as exc:
            errors[name] = exc
    return link_clients(out), errors


def test_demo_site_check_apply_verify_recheck(lab, tmp_path):
    books = load_playbooks()
    first, errors = _check(lab, books)
    assert {n: type(e) for n, e in errors.items()} == UNREACHABLE
    got = {n: {f.advisory: f.status for f in a.findings} for n, a in first.items()}
    assert got == EXPECTED
    # variants, localized evidence and the client link
    assert first["WSUS-SP1"].finding("KB954960").variant == "sp1"
    assert first["WSUS-RTM"].finding("KB954960").variant == "rtm"
    assert first["OFFICE-CL01"].finding("KB954960").linked_host == "WSUS-SP1"
    for name in ("WSUS-SP1", "WSUS-DK", "WSUS-DE", "WSUS-NL", "WSUS-CN"):
        assert first[name].facts["kb954960_sdlog"]["token_hits"] > 0, name
        if name != "WSUS-SP1":  # the Danish, German, Dutch and Chinese logs also match their own wording
            assert first[name].facts["kb954960_sdlog"]["localized_hits"] > 0, name
    assert "Wow6432Node" in first["CM07-SITE"].finding("KB954474").evidence[0].probe

    packages = load_packages(_packages(tmp_path))
    journal = ListJournal()
    plans = {n: plan(books, a, packages) for n, a in first.items()}
    plans = {n: p for n, p in plans.items() if any(f.planned for f in p.findings)}

    def fix(name: str) -> dict:
        ctx = HostContext(name)
        with AgentSession(_endpoint(lab, name), check_mode=False) as s:
            done = apply(s, books, ctx, plans[name], packages, journal)
            return {f.advisory: f for f in verify(s, books, ctx, done)}

    # hosts are independent and the lab's installers take simulated seconds: fix them in parallel
    with ThreadPoolExecutor(max_workers=8) as pool:
        verified = dict(zip(plans, pool.map(fix, plans), strict=True))
    fixable = {n for n, exp in EXPECTED.items() if Status.NON_COMPLIANT in exp.values()} - {"OFFICE-CL01"}
    assert set(verified) == fixable
    for name, findings in verified.items():
        for adv, f in findings.items():
            if EXPECTED[name][adv] == Status.NON_COMPLIANT:
                assert f.status == AFTER.get(name, Status.REMEDIATED), (name, adv, f.reason)
                assert f.verification
    assert any("next full (scheduled) sync" in n for n in verified["CM07-SITE"]["KB954474"].notes)
    intents = [e for e in journal.events if e[0] == "intent"]
    results = [e for e in journal.events if e[0] == "result"]
    assert len(intents) == len(results) and all(e[3] in ("success", "reboot_required") for e in results)
    # the workaround is ONE op: decline (if needed) → approve NotApproved → decline, always ending declined
    assert [e[2] for e in journal.events if e[1] == "WSUS-RTM" and e[0] == "intent"] == ["KB954960-1"]
    assert [m.op for m in lab.records("WSUS-RTM").mutations] == ["wsus.workaround"]

    # Decline clears approvals (IUpdate.Decline): without the store's history the host cannot show it
    # was done, so the second check is non_compliant; with it (and a clean log since) it is mitigated.
    blind, _ = _check(lab, books)
    assert blind["WSUS-RTM"].finding("KB954960").status == Status.NON_COMPLIANT
    mutations_before = {n: len(lab.records(n).mutations) for n in first}
    second, _ = _check(lab, books, journal)
    statuses = {n: {f.advisory: f.status for f in a.findings} for n, a in second.items()}
    assert not any(Status.NON_COMPLIANT in s.values() for s in statuses.values()), statuses
    assert statuses["WSUS-RTM"]["KB954960"] == Status.MITIGATED
    assert statuses["OFFICE-CL01"]["KB954960"] == Status.COMPLIANT  # its server WSUS-SP1 is fixed now
    assert {n: len(lab.records(n).mutations) for n in first} == mutations_before


FAULT_SITE = r"""
x-wsus: &wsus
  os: {version: 6.0.6001, arch: x64, culture: en-US}
  accounts: {'LAB\kbfix': 'Secret-1'}
  registry:
    'HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup':
      {VersionString: 3.1.6001.65, TargetDir: 'C:\Program Files\Update Services\', InstallType: 1}
  files:
    'C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll':
      {version: 3.1.6001.65}
x-fixed: &fixed
  files:
    'C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.dll':
      {version: 3.1.6001.66}
hosts:
  - {name: WSUS-OLDPKG, <<: *wsus, installers: [{match: '*KB954960*', exit_code: 0, seconds: 0}]}
  - {name: WSUS-REBOOT, <<: *wsus, installers: [{match: '*KB954960*', exit_code: 3010, seconds: 0, sets: *fixed}]}
  - {name: WSUS-DROP, <<: *wsus, faults: {drop_after_mutation: true},
     installers: [{match: '*KB954960*', exit_code: 0, seconds: 0, sets: *fixed}]}
"""


def test_failed_pending_reboot_unknown_and_check_mode_through_the_lab(tmp_path):
    books = load_playbooks(["KB954960"])
    packages = load_packages(_packages(tmp_path))
    journal = ListJournal()
    outcome = {}
    with lab_mod.Lab(fixtures_mod.load_host_fixture_text(FAULT_SITE, "fault-site")) as lab:
        for name in ("WSUS-OLDPKG", "WSUS-REBOOT", "WSUS-DROP"):
            ctx = HostContext(name)
            with AgentSession(_endpoint(lab, name), check_mode=True) as s:
                planned = plan(books, assess(books, ctx, s.run(gather_ops(books, ctx))), packages)
                if name == "WSUS-OLDPKG":  # check mode: remoting refuses before sending anything
                    refused = apply(s, books, ctx, planned, packages, journal)
                    assert refused[0].status == Status.FAILED and "check" in refused[0].reason.lower()
                    assert lab.records(name).mutations == []
            with AgentSession(_endpoint(lab, name), check_mode=False) as s:
                done = apply(s, books, ctx, planned, packages, journal)
            with AgentSession(_endpoint(lab, name), check_mode=True) as s:
                outcome[name] = (done[0], verify(s, books, ctx, done)[0])
    old_done, old = outcome["WSUS-OLDPKG"]
    assert old_done.executed[-1].outcome == "success" and old.status == Status.FAILED
    assert "1 Aug 2008" in old.reason and "3.1.6001.65" in old.reason
    assert outcome["WSUS-REBOOT"][1].status == Status.PENDING_REBOOT
    drop_done, drop = outcome["WSUS-DROP"]
    assert drop_done.status == Status.UNKNOWN and drop_done.executed[-1].outcome == "unknown"
    assert len(drop_done.executed) == 1  # never re-sent, nothing after it started
    assert drop.status == Status.UNKNOWN
    drop_events = [e for e in journal.events if e[1] == "WSUS-DROP"]
    assert drop_events == [("intent", "WSUS-DROP", "KB954960-1", None), ("result", "WSUS-DROP", "KB954960-1", "unknown")]
