"""What the audit store knows about a host's past remedies, as a pure input to assess.

Some remedies leave no readable mark on the host. The KB954960 workaround on WSUS 3.0 RTM is one:
`IUpdate.Decline` "removes all approvals for all revisions of the update" (WSUS API reference,
https://learn.microsoft.com/previous-versions/windows/desktop/ms747138(v=vs.85)), so after
decline → approve → decline the update looks exactly as it did before. Whether it was done is a
fact of kbfix's own audit store: `HostHistory.last_success[kind]` is the end time (UTC) of the
last planned action of that kind that succeeded on this host. kbfix builds it from the store
(`kbfix/store/history.py`); tests build it by hand. Playbook expressions see it as `history`,
a mapping kind → ISO-8601 text (use `T(...)` to compare times).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType


@dataclass(frozen=True)
class HostHistory:
    """Past successful remedies on one host: action kind (e.g. `wsus_workaround`) → when the
    last successful one ended (timezone-aware UTC). Empty = nothing known."""

    last_success: Mapping[str, datetime] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, str, datetime]]) -> HostHistory:
        """From (action kind, outcome, ended at) rows in any order; only outcome `success` counts,
        the latest per kind wins. Naive datetimes are taken as UTC."""
        latest: dict[str, datetime] = {}
        for kind, outcome, at in events:
            if outcome != "success":
                continue
            at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
            if kind not in latest or at > latest[kind]:
                latest[kind] = at
        return cls(MappingProxyType(latest))

    def context(self) -> dict[str, str]:
        """The expression view: kind → ISO-8601 UTC text."""
        return {k: v.astimezone(timezone.utc).isoformat() for k, v in self.last_success.items()}
