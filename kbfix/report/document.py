"""Build the report document (schema `kbfix/report/v1`) from a run and its host results.

The document is the source of truth: plain JSON-ready dicts and lists, every time UTC ISO 8601
with a `Z`, hosts sorted by name and advisories by id so a re-render of a stored run is
byte-identical. Every other format is rendered from it (Chef InSpec's reporters work the same
way). Option values whose key looks like a secret are replaced before they enter the document.

Compliance arithmetic (also stated in schema-v1.json): the unit is one host × one advisory; a
host without any finding (e.g. unreachable before gathering) counts as one unit with its own
status. `compliance_percent` = compliant units / assessed units × 100, where compliant units
are `compliant`, `remediated`, `mitigated`, and assessed units exclude `not_applicable` and
`skipped` (they are reported, never counted as failures). None when nothing was assessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from kbfix.runinfo import RunInfo
from playbooks.model import Evidence, ExecutedAction, Finding, HostResult, PlannedAction, Status
from remoting.redaction import REDACTED  # noqa: F401  (re-exported for callers)
from remoting.redaction import redact as _redact

SCHEMA_ID = "kbfix/report/v1"
SCHEMA_VERSION = 1

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
"""Every status value, best to worst (the order of `Status.rank`)."""

COMPLIANT_STATUSES = frozenset({Status.COMPLIANT.value, Status.REMEDIATED.value, Status.MITIGATED.value})
EXCLUDED_STATUSES = frozenset({Status.NOT_APPLICABLE.value, Status.SKIPPED.value})

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


def _evidence(ev: Evidence) -> dict[str, Any]:
    return {
        "probe": ev.probe,
        "value": ev.value,
        "rule": ev.rule,
        "note": ev.note,
        "observed_at": iso_utc(ev.observed_at),
        "lines": [
            {
                "file": ln.file,
                "offset": ln.offset,
                "text": ln.text,
                "timestamp": iso_utc(ln.timestamp),
                "before": list(ln.before),
                "after": list(ln.after),
                "cut": ln.cut,
            }
            for ln in ev.lines
        ],
    }


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


def _advisory(f: Finding, meta: Mapping[str, Any]) -> dict[str, Any]:
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
        "evidence": [_evidence(e) for e in f.evidence],
        "planned": [_planned(p) for p in f.planned],
        "executed": [_executed(e) for e in f.executed],
        "verification": [_evidence(e) for e in f.verification],
    }


def _host(r: HostResult, advisories: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    findings = sorted(r.findings, key=lambda f: f.advisory)
    return {
        "name": r.host,
        "address": r.address,
        "site": r.site,
        "roles": sorted(r.roles),
        "os": redact(r.os),
        "status": Status(r.status).value,
        "error": None if r.error is None else redact(r.error.model_dump(mode="json")),
        "facts_digest": r.facts_digest,
        "started": iso_utc(r.started),
        "ended": iso_utc(r.ended),
        "advisories": [_advisory(f, advisories.get(f.advisory, {})) for f in findings],
    }


def empty_counts() -> dict[str, int]:
    """`{status: 0}` for every status, in rank order."""
    return dict.fromkeys(STATUSES, 0)


def compliance_percent(counts: Mapping[str, int]) -> float | None:
    """Compliant units / assessed units × 100 (2 decimals); None when no unit was assessed."""
    assessed = sum(n for s, n in counts.items() if s not in EXCLUDED_STATUSES)
    if assessed == 0:
        return None
    good = sum(n for s, n in counts.items() if s in COMPLIANT_STATUSES)
    return round(100.0 * good / assessed, 2)


def _units(host: Mapping[str, Any]) -> Iterable[tuple[str | None, str]]:
    """(advisory id or None, status) for every unit of one host."""
    if not host["advisories"]:
        yield None, host["status"]
    for adv in host["advisories"]:
        yield adv["id"], adv["status"]


def _group(counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    failures = sum(n for s, n in counts.items() if Status(s).is_failure or Status(s).is_vulnerable)
    return {**extra, "by_status": counts, "failures": failures, "compliance_percent": compliance_percent(counts)}


def summarize(hosts: Sequence[Mapping[str, Any]], advisories: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The `summary` object of a document from its `hosts` list (see the module docstring)."""
    total = empty_counts()
    host_counts = empty_counts()
    sites: dict[str, dict[str, Any]] = {}
    per_adv: dict[str, dict[str, int]] = {}
    for host in hosts:
        host_counts[host["status"]] += 1
        site_key = host["site"] or ""
        site = sites.setdefault(site_key, {"hosts": 0, "counts": empty_counts()})
        site["hosts"] += 1
        for adv_id, status in _units(host):
            total[status] += 1
            site["counts"][status] += 1
            if adv_id is not None:
                per_adv.setdefault(adv_id, empty_counts())[status] += 1
    findings = sum(len(h["advisories"]) for h in hosts)
    return {
        **_group(total, hosts=len(hosts), findings=findings),
        "hosts_by_status": host_counts,
        "per_site": [
            _group(s["counts"], site=name or None, hosts=s["hosts"]) for name, s in sorted(sites.items())
        ],
        "per_advisory": [
            _group(
                counts,
                id=adv_id,
                title=str(advisories.get(adv_id, {}).get("title") or adv_id),
                severity=advisories.get(adv_id, {}).get("severity"),
            )
            for adv_id, counts in sorted(per_adv.items())
        ],
    }


def _run(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "started": iso_utc(run.started),
        "ended": iso_utc(run.ended),
        "operator": run.operator,
        "kbfix_version": run.kbfix_version,
        "inventory_hash": run.inventory_hash,
        "window": run.window,
        "options": redact(run.options),
        "state": run.state,
    }


def assemble(
    run: RunInfo,
    results: Sequence[HostResult],
    advisories: Mapping[str, Mapping[str, Any]],
    *,
    generated: datetime | None = None,
) -> dict[str, Any]:
    """The document, not validated (`build_document` validates). `generated` defaults to the run end
    (or start) so that re-rendering a stored run gives the same bytes."""
    hosts = [_host(r, advisories) for r in sorted(results, key=lambda r: (r.host.lower(), r.host))]
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "generated": iso_utc(generated or run.ended or run.started),
        "run": _run(run),
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
        "summary": summarize(hosts, advisories),
        "hosts": hosts,
    }
