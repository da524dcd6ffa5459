"""Load playbooks, build the gather request, and assess: facts in, findings out (pure).

`assess` discovers roles (unless the inventory declared them), evaluates each playbook's
derived facts and first-match rules in the Jinja2 sandbox, and returns the host's `HostResult`:
roles, OS info, findings with evidence, JSON-ready facts and a digest of the facts a plan depends on.
`link_clients` is the one cross-host step: it ties a KB954960 client finding to its WSUS server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from playbooks.conditions import ConditionError, Scope, evaluate, render, truth
from playbooks.facts import extract_facts, merge_probes, probe_ops
from playbooks.history import HostHistory
from playbooks.model import Evidence, Finding, HostResult, LogLine, Status, utc_now, worst
from playbooks.reboot_facts import (
    REBOOT_STATE_ID,
    apply_pending_reboot,
    reboot_state_from_response,
    reboot_state_op,
)
from playbooks.spec import (
    EvidenceRef,
    Playbook,
    PlaybookError,
    Probe,
    RolesFile,
    load_playbook_file,
    load_roles_file,
)
from playbooks.version import Version
from remoting.agent_protocol import AgentResponse, OpRequest

BUILTIN_DIR = Path(__file__).parent


@dataclass(frozen=True)
class HostContext:
    """What the inventory knows about a host: its name, declared roles (empty: discover them),
    site, and variables (e.g. `kb954960_workaround_applied`, `wsus_upstream`); and what the
    audit store knows of its past remedies (`history`, see playbooks.history)."""

    name: str
    roles: tuple[str, ...] = ()
    site: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    history: HostHistory = field(default_factory=HostHistory)



def load_playbooks(ids: Sequence[str] | None = None, extra_dirs: Sequence[Path] = ()) -> list[Playbook]:
    """The built-in playbooks (`playbooks/*/playbook.yaml`) plus every `*.yaml` in `extra_dirs`,
    filtered to `ids` (case-insensitive) when given, sorted by id.
    Raises PlaybookError for a bad file, a duplicate id or an unknown requested id."""
    files = sorted(BUILTIN_DIR.glob("*/playbook.yaml"))
    for d in extra_dirs:
        files += sorted(Path(d).glob("*.yaml")) + sorted(Path(d).glob("*/playbook.yaml"))
    books: dict[str, Playbook] = {}
    for f in files:
        pb = load_playbook_file(f)
        if pb.id in books:
            raise PlaybookError(f"{f}: playbook id {pb.id} already loaded from {books[pb.id].path}")
        books[pb.id] = pb
    if ids:
        wanted = {i.upper() for i in ids}
        unknown = wanted - set(books)
        if unknown:
            raise PlaybookError(f"unknown playbook id(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(books))}")
        books = {k: v for k, v in books.items() if k in wanted}
    return [books[k] for k in sorted(books)]


def advisory_meta(playbooks: Sequence[Playbook]) -> dict[str, dict[str, Any]]:
    """id → {title, sources (list of "title <url>"), severity, summary} for reports."""
    return {
        pb.id: {
            "title": pb.title,
            "sources": [s.title + (f" <{s.url}>" if s.url else "") for s in pb.sources],
            "severity": pb.severity,
            "summary": pb.summary,
        }
        for pb in playbooks
    }


@lru_cache(maxsize=1)
def _roles_file() -> RolesFile:
    # roles.yaml ships with the package and never changes during a run: parse it once per process
    return load_roles_file()


def all_probes(playbooks: Sequence[Playbook], roles_file: RolesFile | None = None) -> list[Probe]:
    """The union of the role probes and every playbook's probes (registry probes first)."""
    rf = roles_file or _roles_file()
    return merge_probes([rf.probes, *[pb.probes for pb in playbooks]])


@dataclass(frozen=True)
class _ProbeSet:
    """`all_probes` of one playbook selection and roles file, with what `assess` looks up in it
    for every host: the probes by id and the ids of the log probes (left out of the digest)."""

    books: tuple[Playbook, ...]
    roles_file: RolesFile
    probes: tuple[Probe, ...]
    by_id: Mapping[str, Probe]
    log_ids: frozenset[str]


_PROBE_SETS: list[_ProbeSet] = []  # the latest few; a run assesses every host with the same selection


def _probe_set(playbooks: Sequence[Playbook], rf: RolesFile) -> _ProbeSet:
    """The _ProbeSet of `playbooks` (the same objects, in order) and `rf`, made once (cost, issue
    19: the merge, the id map and the log ids cost ~15 µs a host). Playbooks and roles files are
    frozen models loaded once, compared by identity; an entry keeps them alive. Raises
    PlaybookError as `all_probes` does (nothing is kept then)."""
    for ps in _PROBE_SETS:
        if ps.roles_file is rf and len(ps.books) == len(playbooks) and all(a is b for a, b in zip(ps.books, playbooks, strict=True)):
            return ps
    probes = tuple(all_probes(playbooks, rf))
    ps = _ProbeSet(tuple(playbooks), rf, probes, MappingProxyType({p.id: p for p in probes}),
                   frozenset(p.id for p in probes if p.kind == "log"))
    _PROBE_SETS[:] = [ps, *_PROBE_SETS[:7]]
    return ps


def gather_ops(playbooks: Sequence[Playbook], ctx: HostContext) -> list[OpRequest]:
    """Every read op the selected playbooks and role discovery need: ONE agent request per host.
    (`ctx` is accepted for per-host probe selection; today every host gets the same probes.)
    The last op reads the pending-reboot indicators and boot time (playbooks.reboot_facts)."""
    return [*(o for p in all_probes(playbooks) for o in probe_ops(p)), reboot_state_op()]  # reboot (issue 21)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _jsonable(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:  # most leaves: skip the isinstance chain (perf, same result)
        return value
    if kind is dict:  # the containers of facts next (cost, issue 19: same result, fewer checks)
        return {str(k): _jsonable(v) for k, v in value.items()}
    if kind is list:
        return [_jsonable(v) for v in value]
    if isinstance(value, Version):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def digest_facts(facts: Mapping[str, Any], probes: Sequence[Probe], roles: Sequence[str], *, jsonable: bool = False) -> str:
    """sha256 hex of the plan-relevant facts (all but log scans) and the roles, canonical JSON.
    `jsonable`: the facts are already `_jsonable` output (skips a second deep copy; perf)."""
    return _digest(facts, {p.id for p in probes if p.kind == "log"}, roles, jsonable=jsonable)


def _digest(facts: Mapping[str, Any], log_ids: AbstractSet[str], roles: Sequence[str], *, jsonable: bool) -> str:
    """`digest_facts` with the ids of the log probes given."""
    basis = {"roles": sorted(roles), "facts": {k: v for k, v in facts.items() if k not in log_ids}}
    return _sha256_hex(_DIGEST_JSON.encode(basis if jsonable else _jsonable(basis)).encode("utf-8"))


#: CPython's hashlib lets go of the GIL while it hashes 2048 bytes or more in one call.
_HASH_PIECE = 2047


def _sha256_hex(data: bytes) -> str:
    """`hashlib.sha256(data).hexdigest()`, fed in pieces small enough to keep the GIL (cost, issue
    19): a host's digest text is ~2.5 KB, and letting go of the GIL for ~2 µs of hashing hands the
    interpreter to one of a fleet run's other threads in the middle of the host's assessment (a
    thread switch, and the rest of the assessment on cold caches)."""
    h = hashlib.sha256()
    view = memoryview(data)
    for start in range(0, len(view), _HASH_PIECE):
        h.update(view[start:start + _HASH_PIECE])
    return h.hexdigest()


# `json.dumps(basis, sort_keys=True)`, the same text, with one encoder made once and without the
# circular-reference bookkeeping (cost, issue 19): facts are trees (decoded JSON, fresh dicts).
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, check_circular=False)


def discover_roles(roles_file: RolesFile, facts: Mapping[str, Any]) -> list[str]:
    """The roles whose discovery condition holds on `facts`. Raises ConditionError on a bad rule."""
    ctx = Scope({"facts": facts, "roles": [], "vars": {}})
    return [name for name, role in roles_file.roles.items() if truth(role.when, ctx)]


def context_for(pb: Playbook, facts: Mapping[str, Any], roles: Sequence[str], os: Mapping[str, Any], hvars: Mapping[str, Any],
                history: Mapping[str, str] | None = None) -> Scope:
    """The expression context of one playbook on one host: facts, roles, host, vars, history
    (action kind → ISO time of its last success, from the audit store), then each derived name
    in order. Raises ConditionError when a derivation fails."""
    ctx = Scope({"facts": facts, "roles": list(roles), "host": dict(os), "vars": dict(hvars),
                 "history": dict(history or {})})
    for name, expr in pb.derive.items():
        ctx.set(name, evaluate(expr, ctx))
    return ctx


def _probe_label(probe: Probe, fact: Mapping[str, Any]) -> str:
    if probe.kind == "registry":
        return f"registry.values {fact.get('path') or probe.key}"
    if probe.kind == "file":
        return f"file.info {fact.get('path') or probe.paths[0]}"
    if probe.kind == "log":
        seen = [f["path"] for f in fact.get("files", []) if f.get("exists")]
        return f"log.scan {', '.join(seen) if seen else ' | '.join(probe.paths)}"
    if probe.kind == "products":
        return f"products.list {probe.pattern}"
    if probe.kind == "patches":
        return f"products.patches {probe.pattern}"
    if probe.kind == "wsus_update":
        return f"wsus.find_update {probe.title}"
    return f"service.status {', '.join(probe.names)}"


def _evidence(
    ref: EvidenceRef, probes: Mapping[str, Probe], facts: Mapping[str, Any], ctx: Mapping[str, Any], rule: str, at: datetime
) -> Evidence:
    probe = probes[ref.fact]
    fact = facts.get(ref.fact, {})
    value: Any = evaluate(ref.value, ctx) if ref.value else None
    lines: list[LogLine] = []
    note = ref.note
    if probe.kind == "log":
        wanted = ref.signatures or [s.id for s in probe.signatures]
        for sig in wanted:
            for ln in fact.get("lines", {}).get(sig, []):
                lines.append(LogLine.model_validate(ln))
        if value is None:
            hits = {k: n for k, n in fact.get("hits", {}).items() if k in wanted and n}
            value = ", ".join(f"{k}={n}" for k, n in hits.items()) if hits else ("no matches" if fact.get("exists") else "log not found")
        langs = [s.lang or "?" for s in probe.signatures if s.kind == "localized" and fact.get("hits", {}).get(s.id)]
        if langs:
            note = ((note + "; ") if note else "") + f"localized duplicate-key message matched ({', '.join(langs)})"
    elif value is None and probe.kind == "file":
        value = fact.get("version") if fact.get("exists") else "missing"
    elif value is None and probe.kind == "registry":
        value = json.dumps(_jsonable(fact.get("data", {})), sort_keys=True) if fact.get("exists") else "key missing"
    if fact.get("error"):
        note = ((note + "; ") if note else "") + f"probe error {fact['error'].get('kind')}: {fact['error'].get('message')}"
    return Evidence(
        probe=_probe_label(probe, fact),
        value=None if value is None else str(_jsonable(value)),
        lines=lines,
        rule=rule,
        note=note,
        observed_at=at,
    )


def assess_playbook(
    pb: Playbook,
    facts: Mapping[str, Any],
    roles: Sequence[str],
    os: Mapping[str, Any],
    hvars: Mapping[str, Any],
    probes: Mapping[str, Probe],
    at: datetime,
    history: Mapping[str, str] | None = None,
) -> Finding:
    """One playbook's finding on one host: the first rule whose `when` holds decides.
    Expression failures give status `unknown` naming the rule (never an exception)."""
    try:
        ctx = context_for(pb, facts, roles, os, hvars, history)
        for rule in pb.rules:
            if not truth(rule.when, ctx):
                continue
            rid = f"{pb.id}:{rule.id}"
            variant = render(rule.variant, ctx).strip() or None if rule.variant else None
            remedy = pb.remedies.get(variant) if variant else None
            text = None
            if remedy and rule.status in (Status.NON_COMPLIANT, Status.MITIGATED):
                text = remedy.summary + (f" {remedy.recommend}" if remedy.recommend else "")
            return Finding(
                advisory=pb.id,
                status=rule.status,
                reason=" ".join(render(rule.reason, ctx).split()),
                variant=variant,
                evidence=[_evidence(e, probes, facts, ctx, rid, at) for e in rule.evidence],
                remedy=text,
            )
    except ConditionError as exc:
        return Finding(advisory=pb.id, status=Status.UNKNOWN, reason=f"playbook {pb.id} could not be evaluated: {exc}")
    return Finding(advisory=pb.id, status=Status.NOT_APPLICABLE, reason="no rule of the playbook matched this host")


def assess(
    playbooks: Sequence[Playbook], ctx: HostContext, response: AgentResponse, *, observed_at: datetime | None = None
) -> HostResult:
    """Facts in, findings out (pure: no I/O). `response` answers `gather_ops(playbooks, ctx)`.
    Returns the host's HostResult: status the worst finding, facts JSON-ready, `facts_digest`
    the SHA-256 of the facts a plan depends on (log lines excluded: logs grow without the plan
    changing).

    Roles are `ctx.roles` when declared, else discovered. When a role probe failed with an error
    other than not_found (access denied, truncation) and roles were not declared, findings that
    would be `not_applicable` become `unknown`: an unread key is not proof of absence."""
    at = observed_at or utc_now()
    rf = _roles_file()
    probe_set = _probe_set(playbooks, rf)
    facts = extract_facts(probe_set.probes, response)
    declared = bool(ctx.roles)
    roles = list(ctx.roles) if declared else discover_roles(rf, facts)
    role_errors = [
        f"{p.id}: {facts[p.id]['error']['kind']}"
        for p in rf.probes
        if facts.get(p.id, {}).get("error") and facts[p.id]["error"]["kind"] != "not_found"
    ]
    by_id = probe_set.by_id
    hist = ctx.history.context()
    findings = []
    for pb in playbooks:
        f = assess_playbook(pb, facts, roles, response.host, ctx.vars, by_id, at, hist)
        if f.status == Status.NOT_APPLICABLE and role_errors and not declared:
            f = f.model_copy(update={"status": Status.UNKNOWN, "reason": f"roles could not be read ({'; '.join(role_errors)}): {f.reason}"})
        if response.truncated:
            f.notes.append("the agent response was truncated at its byte limit: some facts are missing")
        findings.append(f)
    # reboot (issue 21): Windows' pending-reboot indicators turn a fixed finding into pending_reboot.
    # They and the boot time stay out of the digest: a restart must not read as drift from the plan.
    reboot_state = reboot_state_from_response(response)
    findings = apply_pending_reboot(findings, reboot_state, at)
    # cost (issue 19): `extract_facts` builds its facts from the agent's JSON document (json.loads
    # in remoting.agent_protocol.decode_response) and its own dicts, lists, strings, numbers and
    # None: they are JSON-ready as they are, and `_jsonable` (a deep copy, ~0.15 ms a host) would
    # return an equal tree. Only the top level is ours to extend (the reboot state below).
    jfacts: dict[str, Any] = dict(facts)
    digest = _digest(jfacts, probe_set.log_ids, roles, jsonable=True)
    if reboot_state is not None:
        jfacts[REBOOT_STATE_ID] = reboot_state.model_dump(mode="json")
    return HostResult(
        host=ctx.name,
        site=ctx.site,
        status=worst([f.status for f in findings]),
        started=at,
        ended=utc_now(),
        roles=roles,
        roles_declared=declared,
        os=dict(response.host),
        findings=findings,
        facts=jfacts,
        facts_digest=digest,
        vars=_jsonable(dict(ctx.vars)),
        history=hist,
        truncated=response.truncated,
    )


def _server_name(url: str) -> str | None:
    try:
        return urlsplit(url if "//" in url else f"http://{url}").hostname
    except ValueError:
        return None


def link_clients(
    results: Mapping[str, HostResult], *, advisory: str = "KB954960", addresses: Mapping[str, str] | None = None
) -> dict[str, HostResult]:
    """Tie each affected client (finding variant `client`) to its WSUS server (its WUServer
    policy value) when that server is in the run; pure, returns new results (status recomputed).

    Matching is case-insensitive on the inventory name, its first DNS label, or `addresses`
    (host → address). The client's status follows the server: server non_compliant/failed/unknown
    → the client stays non_compliant; server compliant → compliant, remediated → remediated,
    mitigated → mitigated (the client recovers at its next synchronization)."""
    index: dict[str, str] = {}
    for name in results:
        index[name.lower()] = name
        index[name.lower().split(".")[0]] = name
    for name, addr in (addresses or {}).items():
        index[addr.lower()] = name
    out = dict(results)
    for name, a in results.items():
        f = a.finding(advisory)
        if f is None or f.variant != "client":
            continue
        url = str(a.facts.get("wu_policy", {}).get("data", {}).get("WUServer") or "")
        host = _server_name(url) or ""
        server = index.get(host.lower()) or index.get(host.lower().split(".")[0])
        if server is None or server == name:
            nf = f.model_copy(update={"notes": [*f.notes, f"its WSUS server {url or '(unknown)'} is not in this run"]})
        else:
            sf = results[server].finding(advisory)
            sstat = sf.status if sf else Status.UNKNOWN
            follow = {Status.COMPLIANT: Status.COMPLIANT, Status.REMEDIATED: Status.REMEDIATED, Status.MITIGATED: Status.MITIGATED}
            status = follow.get(sstat, Status.NON_COMPLIANT)
            reason = f.reason if status == Status.NON_COMPLIANT else (
                f"Affected client of WSUS server {server}, which is now {sstat.value}: it recovers at its next synchronization."
            )
            nf = f.model_copy(update={"linked_host": server, "status": status, "reason": reason,
                                      "notes": [*f.notes, f"linked to WSUS server {server} ({sstat.value})"]})
        findings = [nf if x is f else x for x in a.findings]
        out[name] = a.model_copy(update={"findings": findings, "status": worst([x.status for x in findings])})
    return out
