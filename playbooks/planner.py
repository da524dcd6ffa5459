"""Plan: turn each non-compliant finding's remedy into exact agent ops (pure).

`install_package` → `file.upload` in chunks (or the operator's UNC/HTTP `source`) then
`installer.run` with the package SHA-256, arguments and exit codes; `wsus_workaround` → one
action per step (`wsus.decline_update` / `wsus.approve_update`) so each step is journaled.
A plan that needs a package the catalog lacks says so in the finding's notes instead of failing.
"""

from __future__ import annotations

import math
import ntpath
from collections.abc import Sequence
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
    WsusApproveOp,
    WsusDeclineOp,
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


def install_ops(pkg: Package, action: Action) -> list[PlannedOp]:
    """The ops of an install action (uploads summarised: path, bytes, chunk count)."""
    path, log = remote_paths(pkg, action)
    args = [a.replace("{log}", log) for a in (pkg.args or tuple(action.args))]
    ops: list[PlannedOp] = []
    if not pkg.source:
        chunks = max(1, math.ceil(pkg.size / UPLOAD_CHUNK_BYTES))
        ops.append(UploadOp(path=path, bytes=pkg.size, chunks=chunks, chunk_bytes=UPLOAD_CHUNK_BYTES))
    ops.append(InstallerRunOp(path=path, sha256=pkg.sha256, arg=args, success_codes=list(pkg.success_codes),
                              reboot_codes=list(pkg.reboot_codes), log_path=log, timeout=INSTALLER_TIMEOUT_S))
    return ops


def _install(pb: Playbook, remedy: Remedy, action: Action, n: int, ctx: dict[str, Any], a: HostResult,
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
    update = fact.get("entry")
    if not update:
        title = next((p.title for p in pb.probes if p.id == action.update_fact), "the update")
        return [], [f"'{title}' is not in this server's catalog: nothing to decline/approve"]
    uid, title = update.get("id"), update.get("title")
    out: list[PlannedAction] = []
    per = action.estimated_seconds / max(1, len(action.steps))
    for i, step in enumerate(action.steps):
        if step == "decline_if_needed" and update.get("declined"):
            continue
        ops: list[PlannedOp]
        if step == "approve":
            ops = [WsusApproveOp(id=str(uid), action=str(action.approve_action), group=str(action.approve_group))]
            desc = f"approve '{title}' ({action.approve_action}, {action.approve_group})"
            kind = ActionKind.WSUS_APPROVE
        else:
            ops = [WsusDeclineOp(id=str(uid))]
            desc = f"decline '{title}'"
            kind = ActionKind.WSUS_DECLINE
        out.append(PlannedAction(id=f"{pb.id}-{n}.{i}", advisory=pb.id, kind=kind, description=desc, ops=ops,
                                 estimated_seconds=per, reversible=remedy.reversible, note=remedy.note))
    return out, []


def plan_finding(pb: Playbook, finding: Finding, a: HostResult, packages: PackageCatalog | None) -> Finding:
    """The finding with `planned` filled (non_compliant with a remedy) or notes saying why not."""
    if finding.status != Status.NON_COMPLIANT or not finding.variant:
        return finding
    remedy = pb.remedies.get(finding.variant)
    if remedy is None or not remedy.actions:
        return finding
    try:
        ctx = context_for(pb, a.facts, a.roles, a.os, a.vars)
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
    """A copy of `assessment` whose non-compliant findings carry their planned actions (pure).
    Statuses do not change: planning adds actions and notes only."""
    books = {pb.id: pb for pb in playbooks}
    findings = [plan_finding(books[f.advisory], f, assessment, packages) if f.advisory in books else f
                for f in assessment.findings]
    return assessment.model_copy(update={"findings": findings})
