"""Property tests of the document builder: for any mix of hosts, statuses and text the document
validates, its counts add up, not_applicable/skipped never count as failures, and rendering is
deterministic (the same run from the store gives the same bytes, whatever the host order)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbfix.report import TEXT_FORMATS, build_document, render
from kbfix.report.document import COMPLIANT_STATUSES, EXCLUDED_STATUSES, FAILURE_STATUSES, STATUSES
from kbfix.report.sample import ADVISORIES, run_info
from kbfix.waivers import parse_waivers
from playbooks.model import Evidence, Finding, HostError, HostResult, LogLine, Status

T0 = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)

findings = st.builds(
    Finding,
    advisory=st.sampled_from(["KB954960", "KB954474", "KB999999"]),
    status=st.sampled_from(list(Status)),
    reason=TEXT,
    evidence=st.lists(
        st.builds(
            Evidence,
            probe=TEXT,
            value=st.none() | TEXT,
            lines=st.lists(st.builds(LogLine, file=TEXT, offset=st.integers(0, 2**40), text=TEXT), max_size=2),
            observed_at=st.just(T0),
        ),
        max_size=2,
    ),
)


@st.composite
def results(draw: st.DrawFn) -> list[HostResult]:
    n = draw(st.integers(0, 6))
    names = draw(st.lists(TEXT.filter(bool), min_size=n, max_size=n, unique=True))
    out = []
    for name in names:
        fs = draw(st.lists(findings, max_size=3, unique_by=lambda f: f.advisory))
        site = draw(st.none() | st.sampled_from(["Aarhus", "Köln", "上海"]))
        if fs:
            out.append(HostResult.from_findings(name, fs, site=site, started=T0, ended=T0 + timedelta(seconds=3)))
        else:
            out.append(HostResult(host=name, status=Status.UNREACHABLE, site=site, started=T0,
                                  error=HostError(kind="unreachable", message=draw(TEXT))))
    return out


WAIVE_KB954474 = parse_waivers(
    b"waivers:\n  - {host: '*', advisory: KB954474, justification: j, approved_by: a, expires: 2099-01-01}\n"
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results(), st.booleans())
def test_document_invariants(rs: list[HostResult], waive: bool) -> None:
    doc = build_document(run_info(), rs, ADVISORIES, waivers=WAIVE_KB954474 if waive else None)  # validates
    sm = doc["summary"]
    units = sum(max(1, len(h["advisories"])) for h in doc["hosts"])
    assert sum(sm["by_status"].values()) == units
    assert sum(s["hosts"] for s in sm["per_site"]) == len(rs) == sm["hosts"]
    assert sm["failures"] == sum(n for s, n in sm["by_status"].items() if s in FAILURE_STATUSES)
    assert sm["out_of_scope"] == 0  # no host here is disabled by the inventory
    if not waive:
        assert sm["waived"] == 0
    assessed = sum(n for s, n in sm["by_status"].items() if s not in EXCLUDED_STATUSES)
    good = sum(n for s, n in sm["by_status"].items() if s in COMPLIANT_STATUSES)
    if assessed:
        assert abs(sm["compliance_percent"] - 100 * good / assessed) < 0.01
    else:
        assert sm["compliance_percent"] is None
    for h in doc["hosts"]:
        if h["advisories"]:
            assert STATUSES.index(h["status"]) == max(STATUSES.index(a["status"]) for a in h["advisories"])
        for a in h["advisories"]:
            # a waiver never hides an operational fault, and only a waiver makes `waived`
            assert (a["status"] == "waived") == (a["waiver"] is not None)
            if a["waiver"]:
                assert a["id"] == "KB954474" and a["waiver"]["waived_status"] in ("non_compliant", "pending_reboot", "skipped")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results(), st.randoms(use_true_random=False))
def test_rendering_is_deterministic_and_order_free(rs: list[HostResult], rnd) -> None:
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    a = build_document(run_info(), rs, ADVISORIES)
    b = build_document(run_info(), shuffled, ADVISORIES)
    assert a == b
    for fmt in TEXT_FORMATS:
        assert render(a, fmt, lang="de") == render(b, fmt, lang="de")
