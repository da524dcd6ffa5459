"""The real `Engine` of the runner: the playbooks over remoting sessions.

`PlaybookEngine` adapts the playbooks API (gather_ops → assess → plan → apply → verify) to the
runner's per-host calls and opens one `remoting.session.AgentSession` per host; check and plan
open it with `check_mode=True`, so remoting itself refuses any mutating op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import playbooks as pb
from playbooks.history import HostHistory
from playbooks.model import Finding, HostResult, worst
from remoting.agent_protocol import op
from remoting.session import AgentSession


class PlaybookEngine:
    """Playbooks (`ids`: advisory ids, None = all built in; `extra_dirs`: more playbook
    folders) and an optional package directory (operator-supplied update packages, for plan
    and apply). Raises the playbooks' own errors on bad playbooks or package manifests."""

    def __init__(
        self,
        ids: Sequence[str] | None = None,
        *,
        extra_dirs: Sequence[Path] = (),
        packages_dir: Path | None = None,
        session_factory: Callable[..., Any] = AgentSession,
    ) -> None:
        self.playbooks = pb.load_playbooks(ids, extra_dirs=tuple(extra_dirs))
        self.packages = pb.load_packages(packages_dir) if packages_dir is not None else None
        self._session_factory = session_factory
        # windows (issue 13): host name → HostHistory (past successful remedies, from the audit
        # store; kbfix.store.history.use_store_history sets it for a run). None = nothing known.
        self.history_for: Callable[[str], HostHistory] | None = None

    def context(self, host: Any) -> pb.HostContext:
        """The playbooks' view of an inventory host."""
        history = self.history_for(host.name) if self.history_for is not None else HostHistory()
        return pb.HostContext(name=host.name, roles=tuple(host.roles or ()), site=host.site, vars=dict(host.vars or {}),
                              history=history)

    def session(self, host: Any, *, check_mode: bool) -> Any:
        """One AgentSession (one shell) to the host; use as a context manager."""
        return self._session_factory(host.endpoint, check_mode=check_mode)

    def ping(self, session: Any, host: Any) -> dict[str, Any]:
        """One read-only agent request; returns the agent's host identity (computer name, OS, culture)."""
        resp = session.run([op("1", "env.expand", text="%COMPUTERNAME%")])
        return dict(resp.host)

    def assess(self, session: Any, host: Any) -> Any:
        """Gather every probe in one request and assess (playbooks.assess)."""
        ctx = self.context(host)
        return pb.assess(self.playbooks, ctx, session.run(pb.gather_ops(self.playbooks, ctx)))

    def plan(self, host: Any, assessment: Any) -> Any:
        """Plan the remedies (playbooks.plan)."""
        return pb.plan(self.playbooks, assessment, self.packages)

    def with_findings(self, assessment: Any, findings: list[Finding]) -> Any:
        """The assessment with its findings replaced (pydantic copy)."""
        return assessment.model_copy(update={"findings": list(findings)})

    def apply(self, session: Any, host: Any, assessment: Any, journal: Any, should_stop: Callable[[], bool]) -> list[Finding]:
        """Run the planned actions (playbooks.apply), each through `journal`."""
        return pb.apply(session, self.playbooks, self.context(host), assessment, self.packages, journal,
                        should_stop=should_stop)

    def verify(self, session: Any, host: Any, before: list[Finding]) -> list[Finding]:
        """Re-gather and judge the post-state (playbooks.verify)."""
        return pb.verify(session, self.playbooks, self.context(host), before)

    def link(self, results: list[HostResult], facts: Mapping[str, Mapping[str, Any]],
             addresses: Mapping[str, str]) -> list[HostResult]:
        """Tie affected WSUS clients to their server's verdict (playbooks.link_clients) for the
        hosts whose facts are known; other results pass through unchanged."""
        assessments = {
            r.host: pb.Assessment(host=r.host, roles=r.roles, os=r.os, findings=r.findings, facts=dict(facts[r.host]),
                                  facts_digest=r.facts_digest or "")
            for r in results if r.host in facts and r.findings
        }
        linked = pb.link_clients(assessments, addresses=addresses)
        out = []
        for r in results:
            a = linked.get(r.host)
            if a is None or a.findings == r.findings:
                out.append(r)
            else:
                out.append(r.model_copy(update={"findings": a.findings, "status": worst([f.status for f in a.findings])}))
        return out

    def advisories(self) -> dict[str, dict[str, Any]]:
        """Title, sources, severity and summary per advisory, for reports."""
        return pb.advisory_meta(self.playbooks)
