"""Build the report document (schema `kbfix/report/v2`) from a run and its host results.

The document is the source of truth: plain JSON-ready dicts and lists, every time UTC ISO 8601
with a `Z`, hosts sorted by name and advisories by id so a re-render of a stored run is
byte-identical. Every other format is rendered from it (Chef InSpec's reporters work the same
way). Option values whose key looks like a secret are replaced before they enter the document.

Compliance arithmetic (also stated in schema-v2.json and docs/reports.md): the unit is one
host × one advisory; a host without any finding (e.g. unreachable before gathering) counts as one
unit with its own status in the totals and per site, and under every advisory in `per_advisory`
(it was assessed for none of them). `compliance_percent` = compliant units / counted units × 100, where
compliant units are `compliant`, `remediated`, `mitigated`; counted units are all units except
`not_applicable`, `waived` (counted apart) and hosts the inventory takes out of scope. A unit the
run skipped (window, drift, max-fail, interrupt, lock, not in the plan) is counted and is not
compliant: it keeps its last known state (`last_status`, from the plan or check it rests on) and
its skip reason, and never silently leaves the percentage. None when nothing was counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kbfix.runinfo import RunInfo
from playbooks.model import (
    Evidence,
    ExecutedAction,
    Finding,
    HostResult,
    LogLine,
    PlannedAction,
    SkipReason,
    Status,
)
from remoting.redaction import REDACTED  # noqa: F401  (re-exported for callers)
from remoting.redaction import redact as _redact

if TYPE_CHECKING:  # kbfix.waivers imports this module at run time
    from kbfix.waivers import WaiverFile

SCHEMA_ID = "kbfix/report/v2"
SCHEMA_VERSION = 2

WAIVED = "waived"
_RUN_STATUSES = tuple(s.value for s in Status)
STATUSES: tuple[str, ...] = (*_RUN_STATUSES[:4], WAIVED, *_RUN_STATUSES[4:])
"""Every document status value, best to worst: the run statuses (`Status.rank` order) plus
`waived` (a finding an unexpired waiver covers; counted apart), placed after `mitigated`."""

COMPLIANT_STATUSES = frozenset({Status.COMPLIANT.value, Status.REMEDIATED.value, Status.MITIGATED.value})
EXCLUDED_STATUSES = frozenset({Status.NOT_APPLICABLE.value, WAIVED})
FAILURE_STATUSES = frozenset(s.value for s in Status if s.is_failure or s.is_vulnerable)
STOP_REASONS: tuple[str, ...] = ("max_fail", "interrupted", "window")
"""Skip reasons of a run that stopped early, in the order the banner names them: hosts skipped
for one of these were never touched by the run."""
OUT_OF_SCOPE = "inventory"
"""Skip reason of a host the inventory disables (not a WinRM host): out of scope, not counted."""



def iso_utc(value: datetime | None) -> str | None:
    """`2026-11-23T12:00:00Z` (microseconds kept when present); naive times are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def redact(value: Any) -> Any:
    """A deep copy of `value` (dicts, lists, scalars) with the values of secret-looking keys
    replaced (`remoting.redaction`: the one rule); times as `iso_utc`."""
    return _redact(value, time_text=iso_utc)


def _line(ln: LogLine) -> dict[str, Any]:
    return {
        "file": ln.file,
        "offset": ln.offset,
        "text": ln.text,
        "timestamp": iso_utc(ln.timestamp),
        "before": list(ln.before),
        "after": list(ln.after),
        "cut": ln.cut,
    }


def _evidence_list(items: Sequence[Evidence]) -> list[dict[str, Any]]:
    """Evidence items with each log line shown once: a line (file, byte offset) matched by two
    signatures, or cited by two evidence items of one finding, stays with its first mention;
    `shared_lines` counts the repeats dropped from an item."""
    seen: set[tuple[str, int]] = set()
    out = []
    for ev in items:
        lines = []
        shared = 0
        for ln in ev.lines:
            key = (ln.file, ln.offset)
            if key in seen:
                shared += 1
                continue
            seen.add(key)
            lines.append(_line(ln))
        out.append({
            "probe": ev.probe,
            "value": ev.value,
            "rule": ev.rule,
            "note": ev.note,
            "observed_at": iso_utc(ev.observed_at),
            "lines": lines,
            "shared_lines": shared,
        })
    return out


def _planned(pa: PlannedAction) -> dict[str, Any]:
    return {
        "id": pa.id,
        "kind": pa.kind,
        "description": pa.description,
        "ops": redact([o.model_dump(mode="json") for o in pa.ops]),
        "package": None if pa.package is None else redact(pa.package.model_dump(mode="json")),
        "expected_exit_codes": list(pa.expected_exit_codes),
        "estimated_seconds": pa.estimated_seconds,
        "reversible": pa.reversible,
        "note": pa.note,
    }


def _executed(ea: ExecutedAction) -> dict[str, Any]:
    duration = None
    if ea.ended is not None:
        duration = round((_aware(ea.ended) - _aware(ea.started)).total_seconds(), 3)
    return {
        "action_id": ea.action_id,
        "outcome": ea.outcome,
        "exit_code": ea.exit_code,
        "started": iso_utc(ea.started),
        "ended": iso_utc(ea.ended),
        "duration_seconds": duration,
        "detail": ea.detail,
        "log_tail": ea.log_tail,
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class LastKnown:
    """A host's latest stored result from an earlier run: the state a skipped host keeps.
    run_id/at: where and when (UTC) it was recorded; result: the HostResult."""

    run_id: str
    at: datetime
    result: HostResult


def _advisory(f: Finding, meta: Mapping[str, Any], last: LastKnown | None) -> dict[str, Any]:
    last_status = None
    if f.status is Status.SKIPPED and last is not None:
        prev = next((p for p in last.result.findings if p.advisory == f.advisory), None)
        last_status = None if prev is None else Status(prev.status).value
    return {
        "id": f.advisory,
        "title": str(meta.get("title") or f.advisory),
        "sources": [str(u) for u in meta.get("sources") or ()],
        "severity": meta.get("severity"),
        "status": Status(f.status).value,
        "reason": f.reason,
        "variant": f.variant,
        "remedy": f.remedy,
        "skip_reason": f.skip_reason,
        "last_status": last_status,
        "waiver": None,
        "evidence": _evidence_list(f.evidence),
        "planned": [_planned(p) for p in f.planned],
        "executed": [_executed(e) for e in f.executed],
        "verification": _evidence_list(f.verification),
    }


def host_skip_reason(r: HostResult) -> str | None:
    """The reason a run skipped this host (`window`, `drift`, `max_fail`, `interrupted`, `locked`,
    `not_in_plan`, `inventory`), else None: the typed host-level `HostResult.skip_reason` (a
    finding's own skip_reason — an action not started because the window closed mid-host — does
    not make the host untouched), with the inventory's `disabled` named `inventory` in reports.
    Results stored by kbfix 0.1 had no host-level field: for those, the kind written before the
    `:` of a `skipped` error is read."""
    reason = r.skip_reason
    if reason is not None:
        return OUT_OF_SCOPE if reason is SkipReason.DISABLED else reason.value
    if r.error is not None and r.error.kind == "skipped":
        return r.error.message.split(":", 1)[0].strip() or None  # kbfix 0.1 results only
    return None


def _host(r: HostResult, advisories: Mapping[str, Mapping[str, Any]], last: LastKnown | None) -> dict[str, Any]:
    findings = sorted(r.findings, key=lambda f: f.advisory)
    skip = host_skip_reason(r)
    if skip is None:
        last = None  # only a skipped host rests on an earlier run's state
    roles, os, address = sorted(r.roles), r.os, r.address
    if last is not None:
        # A skipped host keeps its facts: the last run that saw it knew its roles and OS.
        roles = roles or sorted(last.result.roles)
        os = os or last.result.os
        address = address or last.result.address
    return {
        "name": r.host,
        "address": address,
        "site": r.site,
        "roles": roles,
        "os": redact(os),
        "status": Status(r.status).value,
        "skip_reason": skip,
        "last_known": None
        if last is None
        else {"run_id": last.run_id, "at": iso_utc(last.at), "status": Status(last.result.status).value},
        "error": None if r.error is None else redact(r.error.model_dump(mode="json")),
        "facts_digest": r.facts_digest,
        "started": iso_utc(r.started),
        "ended": iso_utc(r.ended),
        "advisories": [_advisory(f, advisories.get(f.advisory, {}), last) for f in findings],
    }


def empty_counts() -> dict[str, int]:
    """`{status: 0}` for every document status, in rank order."""
    return dict.fromkeys(STATUSES, 0)


def compliance_percent(counts: Mapping[str, int], out_of_scope: int = 0) -> float | None:
    """Compliant units / counted units × 100 (2 decimals); None when no unit was counted.

    counts: units per status; out_of_scope: how many of the `skipped` units are hosts the
    inventory disables (not counted). Skipped units the run left untouched are counted and are
    not compliant; `not_applicable` and `waived` are not counted."""
    counted = sum(n for s, n in counts.items() if s not in EXCLUDED_STATUSES) - out_of_scope
    if counted <= 0:
        return None
    good = sum(n for s, n in counts.items() if s in COMPLIANT_STATUSES)
    return round(100.0 * good / counted, 2)


def _units(host: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    """(advisory id or None, status) for every unit of one host."""
    if not host["advisories"]:
        yield None, host["status"]
    for adv in host["advisories"]:
        yield adv["id"], adv["status"]


def _group(counts: dict[str, int], out_of_scope: int = 0, **extra: Any) -> dict[str, Any]:
    failures = sum(n for s, n in counts.items() if s in FAILURE_STATUSES)
    return {
        **extra,
        "by_status": counts,
        "failures": failures,
        "waived": counts[WAIVED],
        "out_of_scope": out_of_scope,
        "compliance_percent": compliance_percent(counts, out_of_scope),
    }


def summarize(
    hosts: Sequence[Mapping[str, Any]], advisories: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The `summary` object of a document from its `hosts` list (see the module docstring).
    `by_status` counts units (host × advisory), `hosts_by_status` counts hosts (the chart's unit)."""
    total = empty_counts()
    host_counts = empty_counts()
    sites: dict[str, dict[str, Any]] = {}
    per_adv: dict[str, dict[str, int]] = {}
    oos_total = 0
    oos_adv: dict[str, int] = {}
    unassessed: list[tuple[str, int]] = []  # (status, out of scope) of hosts without findings
    for host in hosts:
        host_counts[host["status"]] += 1
        site_key = host["site"] or ""
        site = sites.setdefault(site_key, {"hosts": 0, "counts": empty_counts(), "oos": 0})
        site["hosts"] += 1
        out = host["skip_reason"] == OUT_OF_SCOPE
        for adv_id, status in _units(host):
            total[status] += 1
            site["counts"][status] += 1
            oos = int(out and status == Status.SKIPPED.value)
            oos_total += oos
            site["oos"] += oos
            if adv_id is not None:
                per_adv.setdefault(adv_id, empty_counts())[status] += 1
                oos_adv[adv_id] = oos_adv.get(adv_id, 0) + oos
            else:
                unassessed.append((status, oos))
    # A host never assessed (unreachable, refused) is unknown for every advisory: without this an
    # advisory read "100 %, 0 failures" while servers it may concern were never read.
    for adv_id in {*per_adv, *advisories}:
        counts = per_adv.setdefault(adv_id, empty_counts())
        for status, oos in unassessed:
            counts[status] += 1
            oos_adv[adv_id] = oos_adv.get(adv_id, 0) + oos
    findings = sum(len(h["advisories"]) for h in hosts)
    untouched = sum(1 for h in hosts if h["skip_reason"] in STOP_REASONS)
    return {
        **_group(total, oos_total, hosts=len(hosts), findings=findings),
        "hosts_by_status": host_counts,
        "hosts_compliant": sum(n for s, n in host_counts.items() if s in COMPLIANT_STATUSES),
        "hosts_untouched": untouched,
        "per_site": [
            _group(s["counts"], s["oos"], site=name or None, hosts=s["hosts"]) for name, s in sorted(sites.items())
        ],
        "per_advisory": [
            _group(
                counts,
                oos_adv.get(adv_id, 0),
                id=adv_id,
                title=str(advisories.get(adv_id, {}).get("title") or adv_id),
                severity=advisories.get(adv_id, {}).get("severity"),
            )
            for adv_id, counts in sorted(per_adv.items())
        ],
    }


def stop_banner(
    run: RunInfo, hosts: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any] | None:
    """Why, when and how far a run stopped early, or None for a run that went through.

    A run stopped early when hosts were skipped for a STOP_REASONS reason (max-fail stop,
    interrupt, change window ending) or its state is `interrupted`. reason: the first of
    STOP_REASONS present; at: the earliest skip time of an untouched host (else the run end);
    untouched: hosts never worked on; detail: the store's event text for the stop (the max-fail
    note, the interrupt reason) when `events` are given."""
    untouched = [h for h in hosts if h["skip_reason"] in STOP_REASONS]
    if not untouched and run.state != "interrupted":
        return None
    present = {h["skip_reason"] for h in untouched}
    reason = next((r for r in STOP_REASONS if r in present), "interrupted")
    times = sorted(h["ended"] for h in untouched if h["ended"])
    at = times[0] if times else iso_utc(run.ended)
    detail = None
    for ev in events:
        if reason == "max_fail" and ev.get("state") == "note" and ev.get("detail"):
            detail = str(ev["detail"])
        elif reason == "interrupted" and ev.get("state") == "interrupted" and ev.get("detail"):
            detail = str(ev["detail"])
    if detail is None and untouched:
        first = untouched[0]
        detail = next((a["reason"].split("; ", 1)[0] for a in first["advisories"] if a["skip_reason"]), None)
        if detail is None and first["error"]:
            detail = str(first["error"]["message"])
    return {"reason": reason, "at": at, "untouched": len(untouched), "detail": detail}


def _run(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "started": iso_utc(run.started),
        "ended": iso_utc(run.ended),
        "operator": run.operator,
        "change_ticket": run.change_ticket,
        "approved_by": run.approved_by,
        "kbfix_version": run.kbfix_version,
        "inventory_hash": run.inventory_hash,
        "window": run.window,
        "options": redact(run.options),
        "state": run.state,
        "stop": None,
    }


def assemble(
    run: RunInfo,
    results: Sequence[HostResult],
    advisories: Mapping[str, Mapping[str, Any]],
    *,
    generated: datetime | None = None,
    last_known: Mapping[str, LastKnown] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    waivers: WaiverFile | None = None,
) -> dict[str, Any]:
    """The document, not validated (`build_document` validates). `generated` defaults to the run end
    (or start) so that re-rendering a stored run gives the same bytes. last_known: host → its
    latest result from an earlier run (what a skipped host keeps); events: the run's store events
    (the stop banner's detail); waivers: a `kbfix.waivers.WaiverFile` applied at the run's start."""
    last_known = last_known or {}
    hosts = [_host(r, advisories, last_known.get(r.host)) for r in sorted(results, key=lambda r: (r.host.lower(), r.host))]
    waiver_section = None
    if waivers is not None:
        waiver_section = waivers.apply(hosts, run.started)
    doc_run = _run(run)
    doc_run["stop"] = stop_banner(run, hosts, events)
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "generated": iso_utc(generated or run.ended or run.started),
        "run": doc_run,
        "advisories": [
            {
                "id": adv_id,
                "title": str(meta.get("title") or adv_id),
                "sources": [str(u) for u in meta.get("sources") or ()],
                "severity": meta.get("severity"),
                "summary": meta.get("summary"),
            }
            for adv_id, meta in sorted(advisories.items())
        ],
        "waivers": waiver_section,
        "summary": summarize(hosts, advisories),
        "hosts": hosts,
    }
