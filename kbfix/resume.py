"""`kbfix apply --resume RUN` continues the same rollout (issue 14): the interrupted run's serial
batches, max-fail share, per-site cap, change window and packages folder are carried over; an
option typed on the resume command line overrides its carried value and is recorded as such.

`resume_settings` reads them from the run's recorded options (RunInfo.options, written by the
CLI's `apply`; the batch layout by `kbfix.run.apply.run_apply`) and says what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kbfix.preflight import PreflightError
from kbfix.store import AuditStore

#: The rollout settings a resumed apply keeps, by their recorded option name.
CARRIED: tuple[str, ...] = ("serial", "max_fail_percent", "max_per_site", "window", "packages")
_FLAG = {"serial": "--serial", "max_fail_percent": "--max-fail-percent", "max_per_site": "--max-per-site",
         "window": "--window", "packages": "--packages"}


@dataclass
class ResumeSettings:
    """What a resumed apply runs with.

    run_id: the apply run resumed; values: the effective setting per CARRIED name (None: unset);
    carried / overridden: names taken from that run / from the command line; batches: the
    interrupted run's batch layout (host names per batch), None when --serial was overridden or
    the run recorded none.
    """

    run_id: str
    values: dict[str, Any]
    carried: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)
    batches: list[list[str]] | None = None

    def describe(self) -> str:
        """One line for the operator, printed before the resumed run starts."""
        parts = []
        for name in CARRIED:
            value = self.values.get(name)
            if value is None:
                continue
            origin = "from the command line" if name in self.overridden else "carried"
            parts.append(f"{_FLAG[name]} {value} ({origin})")
        if self.batches is not None:
            # Not "same 3 batch(es): 1, 2, 10 host(s)" alone: that read as if all 13 hosts ran again.
            parts.append(f"same {len(self.batches)} batch(es) as that run ({', '.join(str(len(b)) for b in self.batches)} "
                         "host(s)), holding only the hosts it left unfinished")
        return f"resuming apply run {self.run_id}: " + ("; ".join(parts) or "no rollout settings recorded")

    def recorded(self) -> dict[str, Any]:
        """The options to record in the resuming run (with the carried values, so a resume of it
        carries them again)."""
        return {**{k: v for k, v in self.values.items() if v is not None},
                "resumed_settings": {"from": self.run_id, "carried": self.carried, "overridden": self.overridden}}


def resume_settings(store: AuditStore, ref: str, explicit: dict[str, Any]) -> ResumeSettings:
    """The settings for `apply --resume REF` ('latest' = the newest apply run; else an id or
    unique prefix). `explicit` maps CARRIED names to the command line's values (None: not
    given). Raises StoreError (not found) or PreflightError (not an apply run)."""
    run_id = (store.latest_run_id("apply") if ref == "latest" else None) or store.resolve_run(ref)
    info = store.run_info(run_id)
    if info.kind != "apply":
        raise PreflightError(f"--resume {ref}: run {run_id} is not an apply run")
    prior = dict(info.options)
    out = ResumeSettings(run_id, {})
    for name in CARRIED:
        if explicit.get(name) is not None:
            out.values[name] = explicit[name]
            out.overridden.append(name)
        elif prior.get(name) is not None:
            out.values[name] = prior[name]
            out.carried.append(name)
        else:
            out.values[name] = None
    layout = prior.get("batches")
    if "serial" not in out.overridden and isinstance(layout, list):
        out.batches = [[str(n) for n in group] for group in layout if isinstance(group, list)]
    return out
