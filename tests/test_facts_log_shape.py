"""`playbooks.facts._log` (a log probe's fact from the agent's log.scan answers) gives the fact its
first, plainer version gave, on any answers (issue 19 made it cheaper: each signature's latest
timestamp and the kind counts kept as it goes, the signature ids made once per probe, the file
key's backslash runs folded only when there are any). The reference below is that version."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from playbooks.facts import _err, _log
from playbooks.logformats import FORMATS, parse_timestamp
from playbooks.spec import Probe, Signature
from remoting.agent_protocol import OpError, OpResult


def _reference_log(probe: Probe, results: Mapping[str, OpResult]) -> dict[str, Any]:
    ids = [s.id for s in probe.signatures]
    lines: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    files: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    order: dict[str, int] = {}
    last_pos: dict[str, list[int]] = {}
    for i, path in enumerate(probe.paths):
        r = results.get(f"{probe.id}.{i}")
        if r is None or not r.ok:
            err = _err(r)
            files.append({"path": path, "exists": False, "error": err})
            if err["kind"] != "not_found":
                errors.append(err)
            continue
        if (r.data or {}).get("same_as"):
            continue
        for f in (r.data or {}).get("files", []):
            key = re.sub(r"\\+", r"\\", str(f.get("path", ""))).lower()
            if key in seen:
                continue
            seen.add(key)
            order[key] = len(order)
            files.append({"path": f.get("path"), "exists": bool(f.get("exists")), "size": f.get("size"),
                          "encoding": f.get("encoding"), "end_offset": f.get("end_offset"),
                          "full": [ids[j] for j in f.get("patterns_full", []) if 0 <= j < len(ids)], "error": None})
            for m in f.get("matches", []):
                idx = m.get("pattern")
                if not isinstance(idx, int) or not 0 <= idx < len(ids):
                    continue
                pos = [order[key], int(m.get("offset", 0) or 0)]
                if pos > last_pos.get(ids[idx], [-1, -1]):
                    last_pos[ids[idx]] = pos
                ts = parse_timestamp(m.get("line", ""), probe.log_format)
                lines[ids[idx]].append({"file": f.get("path"), "offset": m.get("offset", 0), "text": m.get("line", ""),
                                        "timestamp": ts.isoformat() if ts else None, "before": list(m.get("before", [])),
                                        "after": list(m.get("after", [])), "cut": bool(m.get("cut"))})
    hits = {k: len(v) for k, v in lines.items()}
    kinds = {s.id: s.kind for s in probe.signatures}
    stamps = {k: max((ln["timestamp"] for ln in v if ln["timestamp"]), default=None) for k, v in lines.items()}
    return {
        "exists": any(f["exists"] for f in files), "files": files, "hits": hits,
        "token_hits": sum(n for k, n in hits.items() if kinds[k] == "token"),
        "localized_hits": sum(n for k, n in hits.items() if kinds[k] == "localized"),
        "last": stamps, "pos": last_pos, "full": sorted({sid for f in files for sid in f.get("full", [])}),
        "lines": lines, "error": errors[0] if errors else None,
    }


STAMPED = [
    "2008-07-30 09:00:02.468 UTC\tError\tw3wp.12\tClientImplementation.SyncUpdates\tSystem.ArgumentException",
    "2008-07-30 09:00:02 UTC\tInfo\tw3wp.12\tx",
    "2008-02-30 09:00:02.1 UTC\tbad date",
    "Performing legacy sync  $$<SMS_WSUS_SYNC_MANAGER><07-30-2008 11:00:02.468-60><thread=12 (0xC)>",
    "x $$<SMS_WSUS_SYNC_MANAGER><07-30-2008 11:00:03.000+0><thread=1 (0x1)>",
    "2008-07-30\t09:00:02:468\t 900\t 1a4\tPT\tWARNING: SyncUpdates failure",
    "plain text", "",
]
paths = st.sampled_from(["C:\\Logs\\a.log", "C:\\\\Logs\\A.LOG", "c:\\logs\\\\\\a.log", "D:\\b.log", "C:\\Logs\\a.lo_"])
match = st.fixed_dictionaries(
    {"pattern": st.one_of(st.integers(-1, 4), st.none(), st.just("0")), "line": st.sampled_from(STAMPED)},
    optional={"offset": st.one_of(st.integers(0, 10**6), st.none()), "before": st.lists(st.text(max_size=5), max_size=2),
              "after": st.lists(st.text(max_size=5), max_size=2), "cut": st.booleans()})
log_file = st.fixed_dictionaries(
    {"path": paths, "exists": st.booleans()},
    optional={"size": st.integers(0, 10**6), "encoding": st.sampled_from(["utf-8", "utf-16le", "ansi"]),
              "end_offset": st.integers(0, 10**6), "patterns_full": st.lists(st.integers(-1, 4), max_size=3),
              "matches": st.lists(match, max_size=5)})
answer = st.one_of(
    st.none(),
    st.builds(lambda kind: OpResult("x", "log.scan", False, error=OpError(kind, "m")), st.sampled_from(["not_found", "access_denied"])),
    st.builds(lambda: OpResult("x", "log.scan", True, data={"files": [], "same_as": "p.0"})),
    st.builds(lambda files: OpResult("x", "log.scan", True, data={"files": files}), st.lists(log_file, max_size=3)),
)
signatures = st.lists(st.tuples(st.sampled_from(["s0", "s1", "s2", "s3"]), st.sampled_from(["token", "localized"])),
                      min_size=1, max_size=4)


@settings(max_examples=500, deadline=None)
@given(signatures, st.lists(paths, min_size=1, max_size=3), st.lists(answer, min_size=3, max_size=3), st.sampled_from(FORMATS))
@example([("s0", "token"), ("s0", "localized")], ["C:\\a"], [None, None, None], "none")  # a repeated signature id
def test_log_facts_are_those_of_the_first_version(sigs: list[tuple[str, str]], probe_paths: list[str],
                                                   answers: list[OpResult | None], fmt: str) -> None:
    probe = Probe(id="p", kind="log", paths=probe_paths, log_format=fmt,
                  signatures=[Signature(id=i, pattern="x", kind=k) for i, k in sigs])  # type: ignore[arg-type]
    results = {f"p.{i}": a for i, a in enumerate(answers) if a is not None}
    assert _log(probe, results) == _reference_log(probe, results)
    assert list(_log(probe, results)["last"]) == list(_reference_log(probe, results)["last"])  # key order too
