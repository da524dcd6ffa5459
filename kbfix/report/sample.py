"""A synthetic run for tests, benchmarks and the README screenshot: every status occurs, two sites,
both advisories, log evidence as DESIGN.md quotes it (KB954960 / KB954474 articles), and a
fleet-sized variant (`fleet`). Nothing here talks to a host."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from kbfix.runinfo import RunInfo
from playbooks.model import (
    Evidence,
    ExecutedAction,
    Finding,
    HostError,
    HostResult,
    LogLine,
    PackageRef,
    PlannedAction,
    Status,
)

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)

ADVISORIES: dict[str, dict[str, Any]] = {
    "KB954960": {
        "title": "WSUS 3.0 (RTM/SP1) cannot deliver updates to clients with Office 2003",
        "sources": ["https://support.microsoft.com/kb/954960"],
        "severity": "important",
        "summary": "WSUS 3.0 ClientWebService throws System.ArgumentException in SyncUpdates; clients log 0x8024400E.",
    },
    "KB954474": {
        "title": "ConfigMgr 2007 cannot deploy updates to SMS 2003 clients after the June 2008 updates",
        "sources": ["https://support.microsoft.com/kb/954474"],
        "severity": "important",
        "summary": "wsyncmgr.log: Unexpected DeploymentAction for update 1293995 during legacy sync.",
    },
}

WSUS_LOG = r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log"
WSYNC_LOG = r"D:\SMS\Logs\wsyncmgr.log"
CLIENT_DLL = (
    r"C:\Program Files\Update Services\WebServices\ClientWebService\bin\Microsoft.UpdateServices.WebServices.Client.Dll"
)


def run_info(kind: str = "apply") -> RunInfo:
    """The sample run identity (options include a password to prove redaction)."""
    return RunInfo(
        id="20261123T120000Z-ab12",
        kind=kind,  # type: ignore[arg-type]
        started=T0,
        ended=T0 + timedelta(minutes=7, seconds=12),
        operator="CORP\\ops-anna",
        kbfix_version="0.1.0",
        inventory_hash="9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6",
        window="2026-11-23T12:00:00Z/2026-11-23T14:00:00Z",
        options={"forks": 20, "serial": "25%", "dry_run": False, "winrm_password": "hunter2"},
        state="completed",
    )


def _wsus_error(host: str, extra: str = "") -> Evidence:
    return Evidence(
        probe=f"log.scan {WSUS_LOG}",
        rule="kb954960.server.syncupdates-argumentexception",
        observed_at=T0 + timedelta(seconds=3),
        lines=[
            LogLine(
                file=WSUS_LOG,
                offset=48213,
                timestamp=datetime(2026, 11, 22, 23, 58, 1, tzinfo=timezone.utc),
                text="2026-11-22 23:58:01.511 UTC Error w3wp.12 ClientImplementation.SyncUpdates "
                "System.ArgumentException: An item with the same key has already been added." + extra,
                before=["2026-11-22 23:58:01.493 UTC Info w3wp.12 SoftwareSync started"],
                after=[
                    "   at ClientImplementation.GetSyncInfo(...)",
                    "2026-11-22 23:58:01.512 UTC Warning w3wp.12 SoapUtilities.CreateException "
                    f"ThrowException: actor = http://{host}/ClientWebService/client.asmx, ErrorCode=InternalServerError",
                ],
            )
        ],
    )


def _dll(version: str) -> Evidence:
    return Evidence(
        probe=f"file.info {CLIENT_DLL}",
        value=version,
        rule="kb954960.fixed-version",
        observed_at=T0 + timedelta(seconds=2),
    )


def _wsync() -> Evidence:
    return Evidence(
        probe=f"log.scan {WSYNC_LOG}",
        rule="kb954474.unexpected-deploymentaction",
        observed_at=T0 + timedelta(seconds=4),
        lines=[
            LogLine(
                file=WSYNC_LOG,
                offset=1024,
                text="Error 0x80004005, Unexpected DeploymentAction for update 1293995. Returned from CreateUpdateNode",
                before=["Performing legacy sync", "Pre-processing updates..."],
                after=["Updates summary: 0 processed, 0 matched, 0 outdated, 0 updated"],
            )
        ],
    )


def _install(kb: str, exit_code: int, outcome: str) -> tuple[PlannedAction, ExecutedAction]:
    plan = PlannedAction(
        id=f"{kb.lower()}-install",
        advisory=kb,
        kind="install_package",
        description=f"Install the {kb} update (msiexec /quiet /norestart)",
        package=PackageRef(kb=kb, file=f"WSUS3.0SP1-{kb}-x86.exe", sha256="ab" * 32, size=1_234_567),
        expected_exit_codes=[0, 3010, 1641],
        estimated_seconds=90.0,
        reversible=False,
    )
    done = ExecutedAction(
        action_id=plan.id,
        outcome=outcome,
        exit_code=exit_code,
        started=T0 + timedelta(minutes=2),
        ended=T0 + timedelta(minutes=3, seconds=12.5),
        detail=None if exit_code in (0, 3010) else "installer returned 1603 (fatal error during installation)",
        log_tail="MSI (s) (A8:44) [12:03:12:500]: Product: WSUS 3.0 SP1 -- Installation operation completed.",
    )
    return plan, done


def hosts() -> list[HostResult]:
    """Ten hosts, two sites; together they carry every Status at host or advisory level."""
    out: list[HostResult] = []
    os_2003 = {"caption": "Windows Server 2003 R2", "service_pack": "SP2", "build": "3790", "language": "de-DE"}
    os_2008 = {"caption": "Windows Server 2008", "service_pack": "SP2", "build": "6002", "language": "en-US"}

    def add(name: str, site: str, roles: list[str], os: dict[str, Any], findings: list[Finding], **kw: Any) -> None:
        out.append(
            HostResult.from_findings(
                name, findings, address=f"10.{len(out)}.0.5", site=site, roles=roles, os=os, started=T0,
                ended=T0 + timedelta(seconds=40), **kw,
            )
        )

    wsus, cm = ["wsus"], ["configmgr_site"]
    add("wsus-cph-01.corp.example", "Copenhagen", wsus, os_2008,
        [Finding(advisory="KB954960", status=Status.COMPLIANT, reason="Client DLL 3.1.6001.66 is at or above the fixed version",
                 variant="sp1", evidence=[_dll("3.1.6001.66")])])
    p, x = _install("KB954960", 0, "success")
    add("wsus-cph-02.corp.example", "Copenhagen", wsus, os_2008,
        [Finding(advisory="KB954960", status=Status.REMEDIATED, reason="Update installed, DLL verified", variant="sp1",
                 evidence=[_wsus_error("wsus-cph-02"), _dll("3.1.6001.65")], planned=[p], executed=[x],
                 verification=[_dll("3.1.6001.66")])])
    p, x = _install("KB954960", 3010, "reboot_required")
    add("wsus-ber-01.corp.example", "Berlin", wsus, os_2003,
        [Finding(advisory="KB954960", status=Status.PENDING_REBOOT, reason="Update installed; reboot required (3010)",
                 variant="sp1", evidence=[_dll("3.1.6001.65")], planned=[p], executed=[x])])
    add("wsus-ber-02.corp.example", "Berlin", wsus, os_2003,
        [Finding(advisory="KB954960", status=Status.MITIGATED, reason="WSUS 3.0 RTM: workaround from the KB954960 article in place",
                 variant="rtm", evidence=[_dll("3.0.6000.273")])])
    p, x = _install("KB954960", 1603, "failed")
    add("wsus-ber-03.corp.example", "Berlin", wsus, os_2003,
        [Finding(advisory="KB954960", status=Status.FAILED, reason="Installer exit code 1603", variant="sp1",
                 evidence=[_wsus_error("wsus-ber-03", " <script>alert(1)</script> &amp; | =cmd")], planned=[p], executed=[x])])
    p, _x = _install("KB954474", 0, "success")
    add("cm-cph-01.corp.example", "Copenhagen", cm + wsus, os_2008,
        [Finding(advisory="KB954474", status=Status.NON_COMPLIANT, reason="wsyncmgr.log shows the legacy-sync DeploymentAction error",
                 evidence=[_wsync()], remedy="Install KB954474 on the site server", planned=[p]),
         Finding(advisory="KB954960", status=Status.SKIPPED, reason="Outside the change window",
                 skip_reason="outside window 2026-11-23T12:00:00Z/2026-11-23T14:00:00Z", evidence=[_dll("3.1.6001.65")])])
    add("cm-ber-01.corp.example", "Berlin", cm, os_2003,
        [Finding(advisory="KB954474", status=Status.UNKNOWN, reason="Installer answer lost (connection dropped); re-read the host",
                 evidence=[_wsync()]),
         Finding(advisory="KB954960", status=Status.NOT_APPLICABLE, reason="WSUS role not installed")])
    add("dc-cph-01.corp.example", "Copenhagen", ["domain_controller"], os_2008,
        [Finding(advisory="KB954960", status=Status.NOT_APPLICABLE, reason="WSUS role not installed"),
         Finding(advisory="KB954474", status=Status.NOT_APPLICABLE, reason="No ConfigMgr site server role")])
    out.append(HostResult(host="wsus-ber-04.corp.example", address="10.9.0.5", site="Berlin", roles=[],
                          status=Status.UNREACHABLE, started=T0, ended=T0 + timedelta(seconds=30),
                          error=HostError(kind="unreachable", message="connection refused (10.9.0.5:5985)")))
    return out


def fleet(n_hosts: int = 1000, findings_per_host: int = 10) -> list[HostResult]:
    """A fleet-sized run for the benchmark: `n_hosts` hosts × `findings_per_host` findings (advisory
    ids KB954960, KB954474 and synthetic `KB9000nn`), statuses cycling, one evidence item each."""
    statuses = list(Status)
    adv_ids = ["KB954474", "KB954960"] + [f"KB9000{i:02d}" for i in range(max(0, findings_per_host - 2))]
    out: list[HostResult] = []
    for i in range(n_hosts):
        name = f"srv{i:04d}.site{i % 7}.corp.example"
        findings = []
        for j, adv in enumerate(adv_ids[:findings_per_host]):
            st = statuses[(i + j) % len(statuses)]
            ev = _wsus_error(name) if st.is_failure else _dll("3.1.6001.66")
            findings.append(Finding(advisory=adv, status=st, reason=f"rule matched for {adv}", evidence=[ev]))
        out.append(HostResult.from_findings(name, findings, address=f"10.{i // 250}.{i % 250}.1", site=f"site{i % 7}",
                                            roles=["wsus"], os={"caption": "Windows Server 2008", "build": "6002"},
                                            started=T0))
    return out


def fleet_advisories(findings_per_host: int = 10) -> dict[str, dict[str, Any]]:
    """ADVISORIES plus the synthetic ids `fleet` uses."""
    extra: dict[str, dict[str, Any]] = {
        f"KB9000{i:02d}": {"title": f"Synthetic advisory {i}", "sources": [], "severity": "low", "summary": None}
        for i in range(max(0, findings_per_host - 2))
    }
    return {**ADVISORIES, **extra}
