"""The real `Engine` of the run: the playbooks over remoting sessions.

`PlaybookEngine` adapts the playbooks API (gather_ops → assess → plan → apply → verify) to the
run's per-host calls and opens one `remoting.session.AgentSession` per host; check and plan
open it with `check_mode=True`, so remoting itself refuses any mutating op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import playbooks as pb
from kbfix.run.protocols import HostLike, Journal, Session, StopCheck
from playbooks.history import HostHistory
from playbooks.model import Finding, HostResult
from remoting.agent_protocol import OpRequest, op
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
        session_factory: Callable[..., AbstractContextManager[Session]] = AgentSession,
    ) -> None:
        self.playbooks = pb.load_playbooks(ids, extra_dirs=tuple(extra_dirs))
        self.packages = pb.load_packages(packages_dir) if packages_dir is not None else None
        self._session_factory = session_factory
        # windows (issue 13): host name → HostHistory (past successful remedies, from the audit
        # store; kbfix.store.history.use_store_history sets it for a run). None = nothing known.
        self.history_for: Callable[[str], HostHistory] | None = None
        # cost (issue 19): the gather request's ops, built once. `pb.gather_ops` selects the same
        # probes for every host (its ctx argument is unused today, see its docstring); if it ever
        # selects per host, drop this cache. Frozen OpRequests in a tuple: safe to share.
        self._gather_ops: tuple[OpRequest, ...] | None = None

    def history(self, name: str) -> HostHistory:
        """The host's past remedies (from `history_for`; empty when nothing is known)."""
        return self.history_for(name) if self.history_for is not None else HostHistory()

    def context(self, host: HostLike, history: HostHistory | None = None) -> pb.HostContext:
        """The playbooks' view of an inventory host (`history`: default `self.history(host.name)`)."""
        return pb.HostContext(name=host.name, roles=tuple(host.roles or ()), site=host.site, vars=dict(host.vars or {}),
                              history=self.history(host.name) if history is None else history)

    def session(self, host: HostLike, *, check_mode: bool) -> AbstractContextManager[Session]:
        """One AgentSession (one shell) to the host; use as a context manager."""
        return self._session_factory(host.endpoint, check_mode=check_mode)

    def ping(self, session: Session, host: HostLike) -> dict[str, Any]:
        """One read-only agent request; returns the agent's host identity (computer name, OS, culture)."""
        resp = session.run([op("1", "env.expand", text="%COMPUTERNAME%")])
        return dict(resp.host)

    def assess(self, session: Session, host: HostLike) -> HostResult:
        """Gather every probe in one request and assess (playbooks.assess)."""
        return self.assess_in(session, host, self.history(host.name))

    def assess_in(self, session: Session, host: HostLike, history: HostHistory) -> HostResult:
        """`assess` with the host's history given (a contact process has no store: kbfix.run.procs)."""
        ctx = self.context(host, history)
        if self._gather_ops is None:
            self._gather_ops = tuple(pb.gather_ops(self.playbooks, ctx))
        return pb.assess(self.playbooks, ctx, session.run(self._gather_ops))

    def plan(self, host: HostLike, result: HostResult) -> HostResult:
        """Plan the remedies from the playbooks, the package manifest and the result's facts."""
        return pb.plan(self.playbooks, result, self.packages)

    def apply(self, session: Session, host: HostLike, result: HostResult, journal: Journal,
              should_stop: StopCheck) -> list[Finding]:
        """Run the planned actions (playbooks.apply), each through `journal`."""
        return pb.apply(session, self.playbooks, self.context(host), result, self.packages, journal,
                        should_stop=should_stop)

    def verify(self, session: Session, host: HostLike, before: list[Finding]) -> list[Finding]:
        """Re-gather and judge the post-state (playbooks.verify)."""
        return pb.verify(session, self.playbooks, self.context(host), before)

    def link(self, results: Mapping[str, HostResult], addresses: Mapping[str, str]) -> dict[str, HostResult]:
        """Tie affected WSUS clients to their server's verdict (playbooks.link_clients)."""
        return pb.link_clients(results, addresses=addresses)

    def advisories(self) -> dict[str, dict[str, Any]]:
        """Title, sources, severity and summary per advisory, for reports."""
        return pb.advisory_meta(self.playbooks)
