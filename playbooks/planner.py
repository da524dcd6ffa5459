"""Plan: turn each non-compliant finding's remedy into exact agent ops (pure).

`install_package` → `file.upload` in chunks (or the operator's UNC/HTTP `source`) then
`installer.run` with the package SHA-256, arguments and exit codes; `wsus_workaround` → ONE
`wsus.workaround` op over every matching update (decline if needed → approve NotApproved →
decline, the last decline in a finally on the host), so a stop between steps can never leave
the update approved for every client.
A plan that needs a package the catalog lacks says so in the finding's notes instead of failing.
"""

from __future__ import annotations

import math
import ntpath
from collections.abc import Mapping, Sequence
from typing import Any

from playbooks.assess import context_for
from playbooks.conditions import ConditionError, evaluate
from playbooks.model import (
    ActionKind,
    Finding,
    HostResult,
    InstallerRunOp,
    PackageRef,
    PlannedAction,
    PlannedOp,
    Status,
    UploadOp,
    WsusWorkaroundOp,
)
from playbooks.packages import Package, PackageCatalog
from playbooks.spec import Action, Playbook, Remedy
from playbooks.version import Version

UPLOAD_CHUNK_BYTES = 512 * 1024  # bytes per file.upload request: ~0.7 MiB base64, a few WS-Man Sends
INSTALLER_TIMEOUT_S = 1800  # seconds, the agent's default (PROTOCOL.md installer.run)


def remote_paths(pkg: Package, action: Action) -> tuple[str, str]:
    """(installer path on the host, installer log path on the host). With a `source` the host
    runs the package from there; otherwise it is uploaded to `action.upload_dir`."""
    stem = ntpath.splitext(pkg.file)[0]
    log = f"{action.upload_dir}\\kbfix-{stem}.log"
    if pkg.source:
        return pkg.source, log
    return f"{action.upload_dir}\\kbfix-{pkg.file}", log


# msiexec's verbose log option (Windows Installer docs, "Command-Line Options": /L*v <LogFile>);
# any /L… the operator gave already is kept instead.
MSI_LOG_ARGS = ("/l*v", "{log}")


def installer_args(pkg: Package, action: Action) -> list[str]:
    """The installer's arguments with `{log}` replaced. .msi/.msp: the manifest's (else the
    playbook's) arguments plus `/l*v <log>` unless an /L option is there. .exe: the manifest's
    own switches only (an .exe has no common quiet or log switch)."""
    _path, log = remote_paths(pkg, action)
    if pkg.file.lower().endswith((".msi", ".msp")):
        args = list(pkg.args or action.args)
        if not any(a.lower().startswith("/l") for a in args):
            args += list(MSI_LOG_ARGS)
    else:
        args = list(pkg.args)
    return [a.replace("{log}", log) for a in args]


def install_ops(pkg: Package, action: Action) -> list[PlannedOp]:
    """The ops of an install action (uploads summarised: path, bytes, chunk count)."""
    path, log = remote_paths(pkg, action)
    args = installer_args(pkg, action)
    ops: list[PlannedOp] = []
    if not pkg.source:
        chunks = max(1, math.ceil(pkg.size / UPLOAD_CHUNK_BYTES))
        ops.append(UploadOp(path=path, bytes=pkg.size, chunks=chunks, chunk_bytes=UPLOAD_CHUNK_BYTES))
    ops.append(InstallerRunOp(path=path, sha256=pkg.sha256, arg=args, success_codes=list(pkg.success_codes),
                              reboot_codes=list(pkg.reboot_codes), log_path=log, timeout=INSTALLER_TIMEOUT_S))
    return ops


def refusal(pkg: Package) -> str | None:
    """Why a package cannot be planned as the manifest gives it, or None.

    - A UNC `source` is a second hop: a WinRM logon has no delegated credentials, so the file
      server sees an anonymous logon and `File.Exists` is false (CredSSP or Kerberos delegation
      would be needed; kbfix uploads instead).
    - An .exe without switches in the manifest: a guessed `/quiet /norestart` may show UI on
      WinRM's invisible desktop and hang until the timeout."""
    if pkg.source and pkg.source.replace("/", "\\").startswith("\\\\"):
        return (f"{pkg.file}: UNC source {pkg.source} refused: a WinRM logon has no delegated credentials, so the "
                "second hop to the file server is anonymous and the file is not found; drop `source:` to upload it")
    if not pkg.file.lower().endswith((".msi", ".msp")) and not pkg.args:
        return (f"{pkg.file}: an .exe package needs its silent and log switches in the manifest (`args:`, with "
                "{log} for the log path); kbfix does not guess them (a UI on WinRM's invisible desktop hangs)")
    return None


def _install(pb: Playbook, remedy: Remedy, action: Action, n: int, ctx: Mapping[str, Any], a: HostResult,
             packages: PackageCatalog | None) -> tuple[list[PlannedAction], list[str]]:
    kb = action.kb or pb.id
    try:
        version = Version.maybe(evaluate(action.fits_version, ctx)) if action.fits_version else None
    except ConditionError as exc:
        return [], [f"cannot decide which {kb} package fits: {exc}"]
    arch = a.os.get("arch")
    pkg = packages.find(kb, version, arch) if packages else None
    if pkg is None:
        listed = packages.for_kb(kb) if packages else []
        why = (f"{len(listed)} listed for {kb}, none fits version {version} / arch {arch}" if listed
               else f"none listed for {kb}" if packages else "no packages directory given")
        return [], [f"package for {kb} missing ({why}): add it to the packages manifest"]
    why_not = refusal(pkg)
    if why_not:
        return [], [why_not]
    planned = PlannedAction(
        id=f"{pb.id}-{n}",
        advisory=pb.id,
        kind=ActionKind.INSTALL_PACKAGE,
        description=f"{action.description}: {pkg.file}",
        ops=install_ops(pkg, action),
        package=PackageRef(kb=kb, file=pkg.file, sha256=pkg.sha256, size=pkg.size or None, source=pkg.source),
        expected_exit_codes=[*pkg.success_codes, *pkg.reboot_codes],
        estimated_seconds=pkg.estimated_seconds or action.estimated_seconds,
        reversible=remedy.reversible,
        note=remedy.note,
    )
    return [planned], []


def _workaround(pb: Playbook, remedy: Remedy, action: Action, n: int, a: HostResult) -> tuple[list[PlannedAction], list[str]]:
    fact = a.facts.get(action.update_fact or "", {})
    if not fact.get("available"):
        return [], ["the WSUS administration API did not load on this host: the workaround cannot run remotely"]
    if fact.get("replica"):
        # IUpdateServerConfiguration.IsReplicaServer: a replica has its upstream's approvals and
        # declined status, and IUpdate.Approve/Decline throw InvalidOperationException on it.
        return [], ["this WSUS server is a replica (IsReplicaServer): approvals come from its upstream server; "
                    "run the workaround on the upstream server"]
    updates = [u for u in fact.get("updates", []) if u.get("id")]
    if not updates:
        title = next((p.title for p in pb.probes if p.id == action.update_fact), "the update")
        return [], [f"'{title}' is not in this server's catalog: nothing to decline/approve"]
    if fact.get("requires_license"):
        return [], ["the update's licence agreement is not accepted (RequiresLicenseAgreementAcceptance): IUpdate.Approve "
                    "would throw; accept it in the WSUS console first (kbfix does not accept licences)"]
    title = updates[0].get("title")
    ids = [str(u["id"]) for u in updates]
    desc = (f"'{title}' ({len(ids)} update{'s' if len(ids) > 1 else ''}): "
            + " → ".join(s.replace("_", " ") for s in action.steps)
            + f" ({action.approve_action}, {action.approve_group}); always ends declined")
    ops: list[PlannedOp] = [WsusWorkaroundOp(id=ids, group=str(action.approve_group))]
    return [PlannedAction(id=f"{pb.id}-{n}", advisory=pb.id, kind=ActionKind.WSUS_WORKAROUND, description=desc, ops=ops,
                          estimated_seconds=action.estimated_seconds, reversible=remedy.reversible, note=remedy.note)], []


def plan_finding(pb: Playbook, finding: Finding, a: HostResult, packages: PackageCatalog | None) -> Finding:
    """The finding with `planned` filled (non_compliant with a remedy) or notes saying why not."""
    if finding.status != Status.NON_COMPLIANT or not finding.variant:
        return finding
    remedy = pb.remedies.get(finding.variant)
    if remedy is None or not remedy.actions:
        return finding
    try:
        ctx = context_for(pb, a.facts, a.roles, a.os, a.vars, a.history)
    except ConditionError as exc:
        return finding.model_copy(update={"notes": [*finding.notes, f"cannot plan: {exc}"]})
    planned: list[PlannedAction] = []
    notes: list[str] = []
    for n, action in enumerate(remedy.actions, start=1):
        if action.kind == "install_package":
            got, why = _install(pb, remedy, action, n, ctx, a, packages)
        else:
            got, why = _workaround(pb, remedy, action, n, a)
        planned += got
        notes += why
    if remedy.note and planned:
        notes.append(remedy.note)
    return finding.model_copy(update={"planned": planned, "notes": [*finding.notes, *notes]})


def plan(playbooks: Sequence[Playbook], assessment: HostResult, packages: PackageCatalog | None) -> HostResult:
    """A copy of `assessment` whose non-compliant findings carry their planned actions (pure)."""
    books = {pb.id: pb for pb in playbooks}
    findings = [plan_finding(books[f.advisory], f, assessment, packages) if f.advisory in books else f
                for f in assessment.findings]
    return assessment.model_copy(update={"findings": findings})
