"""Where a host's planned work comes from during apply: a reviewed plan, or a resumed run.

Both re-plan the host from the playbook, the package manifest and the FRESH facts gathered at
apply time (`Engine.plan`): nothing a plan file says is ever sent as an argument, and a host's
status comes from its fresh facts, never from the plan.

- `PlanSource`: the plan approves actions by key (action id + package SHA-256) per host, on the
  facts digest it was made on. A host whose fresh digest differs is `skipped: drift`; an action
  that is re-planned but not in the approved set is not run (and said so).
- `ResumeSource`: every re-planned action, minus those that already succeeded or whose outcome
  is unknown in the resumed chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kbfix.planfile import PlanDocument
from kbfix.reboot import pending_after_resume
from kbfix.run.protocols import Engine, HostLike
from kbfix.run.recovery import ActionKey, Recovery
from kbfix.run.results import skipped_result
from playbooks.model import Finding, HostResult, SkipReason


class WorkSource(Protocol):
    """Supplies a host's planned work during apply."""

    records_plan: bool
    """True when apply records the (re-)planned actions as this run's plan (resume)."""

    def gate(self, host: HostLike) -> HostResult | None:
        """A result for a host that is not to be contacted at all, else None."""
        ...

    def expected_seconds(self, host: HostLike) -> float:
        """The estimate of the host's planned work before it is contacted (window gate)."""
        ...

    def may_change(self, host: HostLike) -> bool:
        """False when the host is only to be re-read (nothing approved): the window does not gate it."""
        ...

    def findings_before(self, host: HostLike) -> Sequence[Finding]:
        """What is known of the host before contact (shown as skipped when it never starts)."""
        ...

    def planned(self, host: HostLike, fresh: HostResult) -> HostResult:
        """The fresh result with the planned actions to run on its findings, or a skipped result."""
        ...


class PlanSource:
    """The work of a reviewed plan (see module docstring). `crashed`: what earlier crashed runs
    left open on these hosts (those actions are not repeated)."""

    records_plan = False

    def __init__(self, plan: PlanDocument, engine: Engine, crashed: Recovery) -> None:
        self._entries = {h.host: h for h in plan.hosts}
        self._engine = engine
        self._crashed = crashed

    def approved(self, host: str) -> set[ActionKey]:
        """The action keys the plan approves for `host`."""
        e = self._entries.get(host)
        return {p.key for p in e.planned} if e else set()

    def gate(self, host: HostLike) -> HostResult | None:
        """Hosts not in the plan are skipped (`not_in_plan`) without contact."""
        if host.name in self._entries:
            return None
        return skipped_result(host, SkipReason.NOT_IN_PLAN, "host is not in the plan (added to the inventory "
                              "since it was made)")

    def expected_seconds(self, host: HostLike) -> float:
        """The plan's estimate for the host (re-checked on the re-planned actions after gather)."""
        e = self._entries.get(host.name)
        return e.estimated_seconds if e else 0.0

    def may_change(self, host: HostLike) -> bool:
        """True when the plan approves any action on the host."""
        e = self._entries.get(host.name)
        return bool(e and e.planned)

    def findings_before(self, host: HostLike) -> Sequence[Finding]:
        """The plan's findings of the host."""
        e = self._entries.get(host.name)
        return e.findings if e else ()

    def planned(self, host: HostLike, fresh: HostResult) -> HostResult:
        """Drift → skipped; else the host re-planned from fresh facts, limited to the approved actions."""
        entry = self._entries[host.name]
        if fresh.facts_digest != entry.facts_digest:
            return skipped_result(host, SkipReason.DRIFT, f"facts changed since the plan (digest {entry.facts_digest} "
                                  f"→ {fresh.facts_digest}); re-run plan", fresh.findings,
                                  planned_for=frozenset(f.advisory for f in entry.findings if f.planned))
        replanned = self._engine.plan(host, fresh)
        approved = self.approved(host.name)
        findings = []
        for f in replanned.findings:
            keep = [p for p in f.planned if p.key in approved]
            notes = [f"'{p.description}' is not in the reviewed plan: not run" for p in f.planned if p.key not in approved]
            findings.append(f.model_copy(update={"planned": keep, "notes": [*f.notes, *notes]}) if notes else f)
        rebuilt = {p.key for f in findings for p in f.planned}
        missing = sorted(k[0] for k in approved - rebuilt)
        if missing and findings:
            first = findings[0]
            findings[0] = first.model_copy(update={"notes": [*first.notes, "planned action(s) " + ", ".join(missing)
                                                              + " no longer follow from the host's facts: not run"]})
        if self._crashed.concerns(host.name):
            findings = self._crashed.filter(host.name, findings)
        return replanned.with_findings(findings, ended=replanned.ended)


class ResumeSource:
    """The work of a resumed apply: every re-planned action minus what the chain already did."""

    records_plan = True

    def __init__(self, engine: Engine, recovery: Recovery) -> None:
        self._engine = engine
        self._recovery = recovery

    def gate(self, host: HostLike) -> HostResult | None:
        """Every host in scope is contacted."""
        return None

    def expected_seconds(self, host: HostLike) -> float:
        """Unknown before the host is re-planned."""
        return 0.0

    def may_change(self, host: HostLike) -> bool:
        """Any host of a resumed run may still have work."""
        return True

    def findings_before(self, host: HostLike) -> Sequence[Finding]:
        """Nothing is known before contact."""
        return ()

    def planned(self, host: HostLike, fresh: HostResult) -> HostResult:
        """The host re-planned from its fresh facts, minus succeeded/unknown actions of the chain."""
        replanned = self._engine.plan(host, fresh)
        findings = self._recovery.filter(host.name, replanned.findings)
        # reboot (issue 21): done remedies awaiting a restart read pending_reboot
        findings = pending_after_resume(findings, fresh.facts)
        return replanned.with_findings(findings, ended=replanned.ended)
