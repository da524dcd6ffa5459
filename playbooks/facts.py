"""Gather: probes → agent ops (one request per host), and agent results → JSON-ready facts.

`gather_ops` merges the probes of the shared role discovery and of every selected playbook
(deduplicated by probe id; registry probes first, because `${reg:ID:NAME}` path references
only see registry ops earlier in the same request — remoting/PROTOCOL.md). `extract_facts`
turns the `AgentResponse` into one dict per probe id; shapes are documented on
`playbooks.spec.Probe`. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from playbooks.logformats import parse_timestamp
from playbooks.spec import PlaybookError, Probe
from remoting.agent_protocol import AgentResponse, OpRequest, OpResult, op

DEFAULT_TAIL_BYTES = 8 * 1024 * 1024  # bytes of a log scanned when the probe sets none: bounds the agent's work


def merge_probes(groups: Iterable[Sequence[Probe]]) -> list[Probe]:
    """The union of probes by id, registry probes first, otherwise in first-seen order.
    Raises PlaybookError when two playbooks define one probe id differently."""
    seen: dict[str, Probe] = {}
    for group in groups:
        for p in group:
            old = seen.get(p.id)
            if old is None:
                seen[p.id] = p
            elif old.identity() != p.identity():
                raise PlaybookError(f"probe {p.id!r} is defined twice with different content")
    probes = list(seen.values())
    return [p for p in probes if p.kind == "registry"] + [p for p in probes if p.kind != "registry"]


def probe_ops(probe: Probe) -> list[OpRequest]:
    """The agent ops for one probe (ids `<probe>` for registry, `<probe>.<n>` per path candidate)."""
    if probe.kind == "registry":
        return [op(probe.id, "registry.values", key=probe.key, view="both")]
    if probe.kind == "file":
        return [op(f"{probe.id}.{i}", "file.info", path=p) for i, p in enumerate(probe.paths)]
    if probe.kind == "log":
        return [
            op(
                f"{probe.id}.{i}",
                "log.scan",
                path=p,
                pattern=[s.pattern for s in probe.signatures],
                max_matches=probe.max_matches,
                context=probe.context,
                rotated=probe.rotated,
                tail_bytes=probe.tail_bytes or DEFAULT_TAIL_BYTES,
            )
            for i, p in enumerate(probe.paths)
        ]
    if probe.kind == "products":
        return [op(probe.id, "products.list", pattern=probe.pattern)]
    if probe.kind == "patches":
        return [op(probe.id, "products.patches", pattern=probe.pattern)]
    if probe.kind == "wsus_update":
        return [op(probe.id, "wsus.find_update", title=probe.title)]
    return [op(probe.id, "service.status", name=list(probe.names))]


def _err(result: OpResult | None) -> dict[str, Any]:
    if result is None:
        return {"kind": "missing", "message": "no result for this op (response truncated or op not sent)"}
    e = result.error
    return {"kind": e.kind if e else "exception", "message": e.message if e else "", "hresult": e.hresult if e else None}


def _registry(probe: Probe, r: OpResult | None) -> dict[str, Any]:
    """Values merged per value name across the views, native (64) first, then Wow6432Node (32):
    on x64 a 64-bit key that exists without a value must not hide the 32-bit key that holds it
    (the agent resolves `${reg:ID:NAME}` the same way, per value). `view`/`path` name the view
    that holds most of the values (64 on a tie); `value_views` says where each value came from."""
    fact: dict[str, Any] = {"exists": False, "view": None, "path": None, "data": {}, "value_views": {}, "error": None}
    if r is None or not r.ok:
        fact["error"] = _err(r)
        return fact
    views = (r.data or {}).get("views", {})
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    best: tuple[int, str, Any] | None = None
    for name in ("64", "32"):  # native view first, then Wow6432Node (32-bit software on x64)
        v = views.get(name) or {}
        if not v.get("exists"):
            continue
        values = v.get("values") or {}
        for k, val in values.items():
            if k not in merged:
                merged[k] = (val or {}).get("value")
                origin[k] = name
        if best is None or len(values) > best[0]:
            best = (len(values), name, v.get("path"))
    if best is not None:
        fact.update(exists=True, view=best[1], path=best[2], data=merged, value_views=origin)
    return fact


def _file(probe: Probe, results: Mapping[str, OpResult]) -> dict[str, Any]:
    cands = []
    chosen: dict[str, Any] | None = None
    for i, path in enumerate(probe.paths):
        r = results.get(f"{probe.id}.{i}")
        if r is not None and r.ok and (r.data or {}).get("exists"):
            d = r.data or {}
            cands.append({"path": d.get("path", path), "exists": True, "error": None})
            if chosen is None:
                chosen = {
                    "exists": True,
                    "path": d.get("path", path),
                    "version": d.get("file_version"),
                    "product_version": d.get("product_version"),
                    "size": d.get("size"),
                    "mtime": d.get("mtime"),
                    "sha256": d.get("sha256"),
                }
        else:
            err = None if (r is not None and r.ok) else _err(r)
            cands.append({"path": (r.data or {}).get("path", path) if r and r.ok else path, "exists": False, "error": err})
    fact = chosen or {"exists": False, "path": None, "version": None}
    fact["candidates"] = cands
    # an unresolved ${reg:...} (not_found) on one candidate is normal; only hard errors count
    hard = [c["error"] for c in cands if c["error"] and c["error"]["kind"] not in ("not_found",)]
    fact["error"] = None if chosen else (hard[0] if hard else None)
    return fact


_BACKSLASH_RUN = re.compile(r"\\{2,}")


@dataclass(frozen=True)
class _LogShape:
    """What `_log` needs of a log probe, computed once per probe (cost, issue 19): signature ids
    in pattern order, and the distinct ids of each kind."""

    ids: tuple[str, ...]
    token: tuple[str, ...]
    localized: tuple[str, ...]


_LOG_SHAPES: dict[int, tuple[Probe, _LogShape]] = {}  # id(probe) -> (probe, shape): the probe is kept, so its id stays its own


def _log_shape(probe: Probe) -> _LogShape:
    hit = _LOG_SHAPES.get(id(probe))
    if hit is not None and hit[0] is probe:
        return hit[1]
    ids = tuple(s.id for s in probe.signatures)
    kinds = {s.id: s.kind for s in probe.signatures}  # (a repeated id counts once, with its last kind)
    unique = tuple(dict.fromkeys(ids))
    shape = _LogShape(ids, tuple(k for k in unique if kinds[k] == "token"), tuple(k for k in unique if kinds[k] == "localized"))
    if len(_LOG_SHAPES) >= 256:  # probes come from the loaded playbooks: a handful per process
        _LOG_SHAPES.clear()
    _LOG_SHAPES[id(probe)] = (probe, shape)
    return shape


def _file_key(path: str) -> str:
    """The path with runs of backslashes made one, lower-cased: one file seen under two spellings."""
    return (_BACKSLASH_RUN.sub(r"\\", path) if "\\\\" in path else path).lower()


def _log(probe: Probe, results: Mapping[str, OpResult]) -> dict[str, Any]:
    shape = _log_shape(probe)
    ids = shape.ids
    nids = len(ids)
    lines: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    stamps: dict[str, str | None] = dict.fromkeys(ids)  # the latest ISO timestamp per signature
    files: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    order: dict[str, int] = {}  # file key → position in scan order (rotated siblings oldest first)
    last_pos: dict[str, list[int]] = {}
    fmt = probe.log_format
    full: set[str] = set()
    for i, path in enumerate(probe.paths):
        r = results.get(f"{probe.id}.{i}")
        if r is None or not r.ok:
            err = _err(r)
            files.append({"path": path, "exists": False, "error": err})
            if err["kind"] != "not_found":
                errors.append(err)
            continue
        data = r.data or {}
        if data.get("same_as"):  # the agent scanned this very file for an earlier candidate
            continue
        for f in data.get("files", []):
            key = _file_key(str(f.get("path", "")))
            if key in order:  # the %ProgramFiles% fallback is often TargetDir itself: count lines once
                continue
            at = order[key] = len(order)
            fpath = f.get("path")
            file_full = [ids[j] for j in f.get("patterns_full", []) if 0 <= j < nids]
            full.update(file_full)
            files.append(
                {
                    "path": fpath,
                    "exists": bool(f.get("exists")),
                    "size": f.get("size"),
                    "encoding": f.get("encoding"),
                    "end_offset": f.get("end_offset"),
                    "full": file_full,
                    "error": None,
                }
            )
            for m in f.get("matches", []):
                idx = m.get("pattern")
                if not isinstance(idx, int) or not 0 <= idx < nids:
                    continue
                sid = ids[idx]
                pos = [at, int(m.get("offset", 0) or 0)]
                cur = last_pos.get(sid)
                if cur is None or pos > cur:  # (`at` ≥ 0: any position beats none)
                    last_pos[sid] = pos
                text = m.get("line", "")
                ts = parse_timestamp(text, fmt)
                iso = ts.isoformat() if ts else None
                if iso:
                    latest = stamps[sid]
                    if latest is None or iso > latest:
                        stamps[sid] = iso
                lines[sid].append(
                    {
                        "file": fpath,
                        "offset": m.get("offset", 0),
                        "text": text,
                        "timestamp": iso,
                        "before": list(m.get("before", [])),
                        "after": list(m.get("after", [])),
                        "cut": bool(m.get("cut")),
                    }
                )
    hits = {k: len(v) for k, v in lines.items()}
    return {
        "exists": any(f["exists"] for f in files),
        "files": files,
        "hits": hits,
        "token_hits": sum(hits[k] for k in shape.token),
        "localized_hits": sum(hits[k] for k in shape.localized),
        "last": stamps,
        "pos": last_pos,
        "full": sorted(full),
        "lines": lines,
        "error": errors[0] if errors else None,
    }


def _products(probe: Probe, r: OpResult | None) -> dict[str, Any]:
    if r is None or not r.ok:
        return {"products": [], "matched": [], "error": _err(r)}
    prods = list((r.data or {}).get("products", []))
    matched = prods
    if probe.code_suffix:
        suffix = probe.code_suffix.upper()
        matched = [p for p in matched if str(p.get("product_code", "")).upper().endswith(suffix)]
    if probe.name_regex:
        rx = re.compile(probe.name_regex, re.IGNORECASE)
        matched = [p for p in matched if rx.search(str(p.get("name", "")))]
    return {"products": prods, "matched": matched, "error": None}


def _patches(probe: Probe, r: OpResult | None) -> dict[str, Any]:
    """Windows Installer patch registrations; `matched` keeps State 1 (MSIPATCHSTATE_APPLIED)."""
    if r is None or not r.ok:
        return {"patches": [], "matched": [], "error": _err(r)}
    pats = list((r.data or {}).get("patches", []))
    return {"patches": pats, "matched": [p for p in pats if p.get("state") == 1], "error": None}


def _wsus_update(probe: Probe, r: OpResult | None) -> dict[str, Any]:
    """Every update with the title (WSUS can hold several: revisions re-published under one
    title), `entry` the first for display, `declined_all`, `replica` (IsReplicaServer) and
    `requires_license` (any match whose licence is not accepted)."""
    if r is None or not r.ok:
        return {"available": False, "found": False, "updates": [], "entry": None, "declined_all": False,
                "replica": False, "requires_license": False, "error": _err(r)}
    d = r.data or {}
    ups = list(d.get("updates", []))
    return {"available": bool(d.get("available")), "found": bool(ups), "updates": ups, "entry": ups[0] if ups else None,
            "declined_all": bool(ups) and all(u.get("declined") for u in ups), "replica": bool(d.get("replica")),
            "requires_license": any(u.get("requires_license") for u in ups), "error": None}


def extract_facts(probes: Sequence[Probe], response: AgentResponse) -> dict[str, dict[str, Any]]:
    """One JSON-ready fact dict per probe id from the agent's answers (missing answers become
    facts with `error.kind == "missing"`). JSON-ready as returned: only dicts with str keys,
    lists, str, int, float, bool and None (the answers' `data` is decoded JSON), so `assess`
    stores them without another copy; keep it so (tests/test_assess_facts_plain.py)."""
    results = response.by_id()
    facts: dict[str, dict[str, Any]] = {}
    for p in probes:
        if p.kind == "registry":
            facts[p.id] = _registry(p, results.get(p.id))
        elif p.kind == "file":
            facts[p.id] = _file(p, results)
        elif p.kind == "log":
            facts[p.id] = _log(p, results)
        elif p.kind == "products":
            facts[p.id] = _products(p, results.get(p.id))
        elif p.kind == "patches":
            facts[p.id] = _patches(p, results.get(p.id))
        elif p.kind == "wsus_update":
            facts[p.id] = _wsus_update(p, results.get(p.id))
        else:
            r = results.get(p.id)
            facts[p.id] = {"services": (r.data or {}).get("services", {}), "error": None} if r and r.ok else {"services": {}, "error": _err(r)}
    return facts
