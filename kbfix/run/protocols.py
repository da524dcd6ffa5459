"""What the run needs of its collaborators, as typed protocols: an inventory host, a session,
the playbook engine, a progress display.

`inventory.Host` satisfies `HostLike` (read-only attributes: it is a frozen dataclass);
`kbfix.run.playbook_engine.PlaybookEngine` satisfies `Engine`; `kbfix.progress` implements
`Progress`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from playbooks.model import Finding, HostResult, SkipReason
from remoting.agent_protocol import AgentResponse, OpRequest
from remoting.endpoint import Endpoint


class HostLike(Protocol):
    """What the run reads from an inventory host (`inventory.Host`)."""

    @property
    def name(self) -> str:
        """The inventory name."""
        ...

    @property
    def roles(self) -> Sequence[str]:
        """Declared roles (empty: discover them)."""
        ...

    @property
    def site(self) -> str | None:
        """The host's site, for per-site caps and reports."""
        ...

    @property
    def vars(self) -> Mapping[str, Any]:
        """Effective host variables."""
        ...

    @property
    def endpoint(self) -> Endpoint | None:
        """How to reach the host; None when the inventory disables it."""
        ...

    @property
    def skipped_reason(self) -> str | None:
        """Why the inventory disables the host, else None."""
        ...


class Session(Protocol):
    """One open agent session to a host (`remoting.session.AgentSession`)."""

    def run(self, ops: Sequence[OpRequest]) -> AgentResponse:
        """Send one agent request; raises remoting errors."""
        ...


class Journal(Protocol):
    """The store's per-run journal (`kbfix.store.StoreJournal`): see `playbooks.Journal`."""

    def intent(self, host: str, action: Any) -> None:
        """Commit the intent row before the action is sent."""
        ...

    def result(self, host: str, action: Any, executed: Any) -> None:
        """Append the result row after the answer."""
        ...


StopCheck = Callable[[], SkipReason | None]
"""Asked before each action: why to stop (window, interrupted) or None to go on."""


class Engine(Protocol):
    """The playbooks as the run uses them (`kbfix.run.playbook_engine.PlaybookEngine`). Every
    per-host step takes and returns the one per-host value, `HostResult`."""

    def session(self, host: HostLike, *, check_mode: bool) -> AbstractContextManager[Session]:
        """One open session to the host (one shell); check_mode refuses any mutating op."""
        ...

    def ping(self, session: Session, host: HostLike) -> dict[str, Any]:
        """One trivial agent request; returns the host identity the agent reported."""
        ...

    def assess(self, session: Session, host: HostLike) -> HostResult:
        """Gather (one request) and assess: the host's result with facts and findings."""
        ...

    def plan(self, host: HostLike, result: HostResult) -> HostResult:
        """The result with planned actions on its findings, built from the playbook, the package
        manifest and the result's facts."""
        ...

    def apply(self, session: Session, host: HostLike, result: HostResult, journal: Journal,
              should_stop: StopCheck) -> list[Finding]:
        """Run the planned actions through the journal; return the findings with `executed`."""
        ...

    def verify(self, session: Session, host: HostLike, before: list[Finding]) -> list[Finding]:
        """Re-gather and return the post-state findings (`verification` evidence filled)."""
        ...

    def link(self, results: Mapping[str, HostResult], addresses: Mapping[str, str]) -> dict[str, HostResult]:
        """Cross-host verdicts after all hosts ran (a WSUS client follows its server when that
        server is in the run); returns every result, changed where a link applies."""
        ...

    def advisories(self) -> dict[str, dict[str, Any]]:
        """`{advisory id: {title, sources, severity, summary}}` for reports."""
        ...


class Progress(Protocol):
    """What the run reports while running (kbfix.progress implements it)."""

    def start(self, kind: str, total: int, batches: int) -> None:
        """The run starts over `total` hosts in `batches` batches."""
        ...

    def batch(self, index: int, hosts: int) -> None:
        """Batch `index` (0-based) with `hosts` hosts starts."""
        ...

    def host_done(self, result: HostResult) -> None:
        """One host finished (any status)."""
        ...

    def stop(self) -> None:
        """The run is over."""
        ...


class NoProgress:
    """A Progress that shows nothing."""

    def start(self, kind: str, total: int, batches: int) -> None:
        """Nothing."""

    def batch(self, index: int, hosts: int) -> None:
        """Nothing."""

    def host_done(self, result: HostResult) -> None:
        """Nothing."""

    def stop(self) -> None:
        """Nothing."""
