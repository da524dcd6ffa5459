"""MITRE Heimdall Data Format (HDF) export: the report document as an InSpec-style exec JSON.

HDF is the JSON that MITRE Heimdall and the SAF tools read (an InSpec exec-JSON superset). Its
schema, `hdf_exec_json.schema.json` next to this module, is MITRE's published
`libs/inspecjs/schemas/exec-json.json` from github.com/mitre/heimdall2 at commit
2e4a8bec1e4d539f2f55e3adfca07f31f829acb2 (Apache-2.0, © The MITRE Corporation), unchanged.

Mapping: one profile `kbfix` for the run; one control per advisory (id = advisory id, title and
description in the report language, refs = the advisory's sources, impact from its severity);
one result per host with that advisory, `resource` = the host, `code_desc` = host, status and
reason, `message` = the evidence (probe = value, matched log lines verbatim). Result status:

- `passed`: compliant, remediated, mitigated;
- `failed`: non_compliant, pending_reboot, and a finding this run skipped (window, drift,
  max-fail, interrupt, lock): it counts against compliance in kbfix's arithmetic, so it must in
  Heimdall's too; `code_desc` says it was skipped and its last known state;
- `skipped`: not_applicable, waived (the waiver in `skip_message`, as InSpec reports a waived
  control), hosts the inventory takes out of scope;
- `error`: failed, unreachable, unknown (the host could not be assessed or an answer was lost).

A host without findings (unreachable before gathering) gets an `error` result in every control.
The early-stop banner, operator, change ticket and approver go into the profile's `summary`
and `status_message`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

from kbfix.report.document import OUT_OF_SCOPE
from kbfix.report.i18n import LocaleFormat, parse_iso
from kbfix.report.view import stop_text

HDF_SCHEMA_PATH: Path = Path(__file__).resolve().parent / "hdf_exec_json.schema.json"
HDF_SCHEMA_SOURCE = (
    "https://github.com/mitre/heimdall2/blob/2e4a8bec1e4d539f2f55e3adfca07f31f829acb2/libs/inspecjs/schemas/exec-json.json"
)

_PASSED = frozenset({"compliant", "remediated", "mitigated"})
_FAILED = frozenset({"non_compliant", "pending_reboot", "skipped"})
_ERROR = frozenset({"failed", "unreachable", "unknown"})
# HDF impact (0..1) by severity, as Heimdall bins it: >=0.9 critical, >=0.7 high, >=0.4 medium, >=0.1 low.
_IMPACT = {"critical": 0.9, "high": 0.7, "important": 0.7, "medium": 0.5, "moderate": 0.5, "low": 0.3}


class HdfSchemaError(ValueError):
    """An HDF document does not match MITRE's exec-json schema; `errors` lists `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)")
        self.errors = errors


@lru_cache(maxsize=1)
def _validator() -> Draft7Validator:
    schema = json.loads(HDF_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def validate_hdf(hdf: Mapping[str, Any]) -> None:
    """Check an HDF document against the shipped MITRE schema; raises HdfSchemaError."""
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in _validator().iter_errors(hdf)]
    if errors:
        raise HdfSchemaError(errors[:20])


def _evidence_text(adv: Mapping[str, Any]) -> str:
    out: list[str] = []
    for ev in [*adv["evidence"], *adv["verification"]]:
        out.append(ev["probe"] + ("" if ev["value"] is None else f" = {ev['value']}"))
        out.extend(f"{ln['file']} @{ln['offset']}: {ln['text']}" for ln in ev["lines"])
    return "\n".join(out)


def _seconds(host: Mapping[str, Any]) -> float | None:
    if not host.get("ended"):
        return None
    return max(0.0, (parse_iso(host["ended"]) - parse_iso(host["started"])).total_seconds())


def _result(host: Mapping[str, Any], adv: Mapping[str, Any] | None, f: LocaleFormat) -> dict[str, Any]:
    status = host["status"] if adv is None else adv["status"]
    reason = adv["reason"] if adv else (host["error"] or {}).get("message", "")
    label = f.status(status)
    out_of_scope = host["skip_reason"] == OUT_OF_SCOPE and status == "skipped"
    if status == "skipped" and not out_of_scope:
        last = adv["last_status"] if adv else None
        label += f" ({host['skip_reason']}" + (f"; {f.status(last)}" if last else "") + ")"
    res: dict[str, Any] = {
        "code_desc": f"{host['name']}: {label}: {reason}",
        "start_time": host["started"],
        "run_time": _seconds(host),
        "resource": host["name"],
        "resource_id": host["name"],
        "message": None,
        "skip_message": None,
    }
    if status in _PASSED:
        res["status"] = "passed"
    elif status in _ERROR:
        res["status"] = "error"
        res["exception"] = (host["error"] or {}).get("kind") or status
        res["message"] = (_evidence_text(adv) if adv else "") or reason
    elif status in _FAILED and not out_of_scope:
        res["status"] = "failed"
        res["message"] = _evidence_text(adv) if adv else reason
    else:
        res["status"] = "skipped"
        if adv is not None and adv.get("waiver"):
            w = adv["waiver"]
            res["skip_message"] = (f"waived ({f.status(w['waived_status'])}): {w['justification']}; approved by "
                                   f"{w['approved_by']}; expires {w['expires']} ({w['source']})")
        else:
            res["skip_message"] = f"{label}: {reason}"
    return res


def build_hdf(doc: Mapping[str, Any], lang: str = "en") -> dict[str, Any]:
    """The HDF (exec JSON) document of a kbfix report document, texts in `lang`."""
    f = LocaleFormat(lang)
    run = doc["run"]
    controls: dict[str, dict[str, Any]] = {}
    for adv in doc["advisories"]:
        sev = (adv.get("severity") or "").lower()
        refs = [{"url": u} for u in adv["sources"] if "://" in u] + [{"ref": s} for s in adv["sources"] if "://" not in s]
        summary = f.summary(adv["id"], adv.get("summary")) or ""
        controls[adv["id"]] = {
            "id": adv["id"],
            "title": f.title(adv["id"], adv["title"]),
            "desc": summary,
            "descriptions": [{"label": "default", "data": summary}],
            "impact": _IMPACT.get(sev, 0.5),
            "refs": refs,
            "tags": {"severity": sev or None, "kbfix_advisory": adv["id"]},
            "code": None,
            "source_location": {"ref": f"playbooks/{adv['id'].lower()}/playbook.yaml", "line": None},
            "results": [],
        }
    for host in doc["hosts"]:  # advisories with findings but missing from the catalogue get a plain control
        for adv in host["advisories"]:
            controls.setdefault(adv["id"], {
                "id": adv["id"], "title": adv["title"], "desc": None, "descriptions": [], "impact": 0.5,
                "refs": [], "tags": {}, "code": None, "source_location": {"ref": None, "line": None}, "results": [],
            })
    for host in doc["hosts"]:
        if not host["advisories"]:
            for ctl in controls.values():
                ctl["results"].append(_result(host, None, f))
        for adv in host["advisories"]:
            controls[adv["id"]]["results"].append(_result(host, adv, f))
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for ctl in controls.values():
        statuses = {r["status"] for r in ctl["results"]}
        key = "failed" if statuses & {"failed", "error"} else "passed" if "passed" in statuses else "skipped"
        counts[key] += 1
    banner = stop_text(doc, f)
    who = (f"run {run['id']} ({run['kind']}, {run['state']}) by {run['operator']}"
           + (f"; change ticket {run['change_ticket']}" if run.get("change_ticket") else "")
           + (f"; approved by {run['approved_by']}" if run.get("approved_by") else ""))
    duration = None
    if run.get("ended"):
        duration = (parse_iso(run["ended"]) - parse_iso(run["started"])).total_seconds()
    body = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return {
        "platform": {"name": "kbfix", "release": run["kbfix_version"], "target_id": run["id"]},
        "version": run["kbfix_version"],
        "statistics": {"duration": duration, "controls": {k: {"total": v} for k, v in counts.items()}},
        "profiles": [
            {
                "name": "kbfix",
                "title": f"kbfix {run['kind']} {run['id']}",
                "version": run["kbfix_version"],
                "maintainer": run["operator"],
                "summary": (banner + " " if banner else "") + who,
                "license": None,
                "sha256": hashlib.sha256(body).hexdigest(),  # of the kbfix document this was made from
                "status": "loaded",
                "status_message": banner,
                "supports": [{"platform-family": "windows"}],
                "attributes": [],
                "groups": [{"id": "kbfix", "title": "kbfix playbooks", "controls": sorted(controls)}],
                "controls": [controls[k] for k in sorted(controls)],
            }
        ],
    }


def render_hdf(doc: Mapping[str, Any], lang: str = "en") -> bytes:
    """The HDF document as UTF-8 JSON (compact, one line, trailing newline)."""
    return (json.dumps(build_hdf(doc, lang), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


__all__ = ["HDF_SCHEMA_PATH", "HDF_SCHEMA_SOURCE", "HdfSchemaError", "build_hdf", "render_hdf", "validate_hdf"]
