"""Fleet state: each host's latest known state across runs, where it comes from and how old it is.

A host's state is its newest `final` result in any run that did not skip it (a skip says
nothing new about the host). Pure functions over the audit store's rows; the CLI prints them
(`kbfix status`, `kbfix report fleet`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kbfix.store import AuditStore


@dataclass(frozen=True)
class HostState:
    """One host's latest known state: status, the run (id, kind) and UTC time it was recorded,
    its age in seconds at `now`, roles and OS facts from that result."""

    host: str
    status: str
    run_id: str
    run_kind: str
    at: datetime
    age_seconds: float
    roles: tuple[str, ...]
    os: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict (time as ISO 8601 UTC with Z)."""
        return {
            "host": self.host, "status": self.status, "run_id": self.run_id, "run_kind": self.run_kind,
            "at": self.at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "age_seconds": round(self.age_seconds, 1), "age": age_text(self.age_seconds),
            "roles": list(self.roles), "os": self.os,
        }


def age_text(seconds: float) -> str:
    """`3d 4h`, `5h 12m`, `7m`, `12s`: the two largest units of a non-negative age."""
    s = max(0, int(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m" if m else f"{sec}s"


def fleet_state(store: AuditStore, *, now: datetime | None = None) -> list[HostState]:
    """Every host's latest known state in the store, sorted by host name."""
    now = now or datetime.now(timezone.utc)
    kinds: dict[str, str] = {}
    out = []
    for host, (run_id, at, result) in store.latest_states().items():
        if run_id not in kinds:
            kinds[run_id] = store.run_info(run_id).kind
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        out.append(HostState(host, result.status.value, run_id, kinds[run_id], at, (now - at).total_seconds(),
                             tuple(result.roles), dict(result.os)))
    return sorted(out, key=lambda s: (s.host.lower(), s.host))


def render_fleet(states: Sequence[HostState], fmt: str) -> bytes:
    """The fleet state as `json` (a list of objects) or `csv` (UTF-8 with BOM). Raises ValueError."""
    if fmt == "json":
        return (json.dumps([s.as_json() for s in states], ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    if fmt == "csv":
        from kbfix.report.text import csv_cell

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        cols = ["host", "status", "run_id", "run_kind", "at", "age_seconds", "age", "roles"]
        w.writerow(cols)
        for s in states:
            row = s.as_json()
            row["roles"] = ", ".join(s.roles)
            w.writerow([csv_cell(row[c]) for c in cols])
        return ("\ufeff" + buf.getvalue()).encode("utf-8")
    raise ValueError(f"fleet state format {fmt!r}: choose json or csv")


__all__ = ["HostState", "age_text", "fleet_state", "render_fleet"]
