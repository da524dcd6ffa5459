"""What the templates need beyond the document: which statuses to show, the status chart geometry,
the advisory columns. Pure functions of the document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kbfix.report.document import STATUSES
from kbfix.report.env import source_parts
from kbfix.report.i18n import N_, SEVERITY_LABELS, LocaleFormat

CHART_LABEL_WIDTH = 150  # px for the status label column of the SVG chart
CHART_BAR_MAX = 420  # px of the longest bar
CHART_ROW = 22  # px per bar row
# Host details are opened on screen for statuses that need a reader's attention.
OPEN_STATUSES = frozenset({"non_compliant", "unknown", "failed", "unreachable", "pending_reboot", "skipped"})


BANNER = N_(
    "Run stopped early: %(why)s, at %(at)s. %(untouched)s host(s) were never touched and count as not compliant."
)


def stop_text(doc: Mapping[str, Any], f: LocaleFormat) -> str | None:
    """The early-stop banner of a document in f's language (why, when, how many hosts untouched,
    then the store's detail), or None for a run that went through. Every format shows it first."""
    stop = doc["run"].get("stop")
    if not stop:
        return None
    text = f.gettext(BANNER) % {
        "why": f.stop(stop["reason"]),
        "at": f.datetime(stop["at"]) or "–",
        "untouched": f.number(stop["untouched"]),
    }
    return f"{text} ({stop['detail']})" if stop.get("detail") else text


def shown_statuses(doc: Mapping[str, Any]) -> list[str]:
    """Status codes, best to worst, that occur in the run (host or finding level); all of them when none."""
    sm = doc["summary"]
    shown = [s for s in STATUSES if sm["by_status"].get(s) or sm["hosts_by_status"].get(s)]
    return shown or list(STATUSES)


def chart(doc: Mapping[str, Any], shown: list[str]) -> dict[str, Any]:
    """Bar geometry (px) of the status chart, one unit: hosts (`summary.hosts_by_status`), each
    host once with its overall status. `{width, height, label_width, bars: [{code, count, y, width}]}`."""
    counts = doc["summary"]["hosts_by_status"]
    top = max([counts[s] for s in shown] + [1])
    bars = [
        {
            "code": s,
            "count": counts[s],
            "y": 4 + i * CHART_ROW,
            "width": 0 if counts[s] == 0 else max(2, round(CHART_BAR_MAX * counts[s] / top)),
        }
        for i, s in enumerate(shown)
    ]
    return {
        "width": CHART_LABEL_WIDTH + CHART_BAR_MAX + 70,
        "height": 8 + CHART_ROW * len(shown),
        "label_width": CHART_LABEL_WIDTH,
        "bars": bars,
    }


def options_text(options: Mapping[str, Any]) -> str:
    """Run options as compact, key-sorted JSON (already redacted in the document)."""
    return json.dumps(options, sort_keys=True, ensure_ascii=False, default=str)


def context(doc: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """The template context for `doc` in `lang`: `doc`, `f` (LocaleFormat), `shown`, `chart` (hosts),
    `banner` (the early-stop text or None),
    `adv_ids`, `sources` (first source URL found per advisory), `rank`, `open_statuses`, `html_lang`,
    `options_text`, and lookup tables translated once (templates loop over 10,000s of results):
    `S` status code → label, `T` advisory id → title, `SUM` advisory id → description, `SEV` severity → label.
    Raises UnknownLanguageError for an unsupported language."""
    fmt = LocaleFormat(lang)
    shown = shown_statuses(doc)
    host_shown = [s for s in shown if doc["summary"]["hosts_by_status"].get(s)] or shown
    sources = {}
    for adv in doc.get("advisories", ()):
        urls = [u for u in (source_parts(s)["url"] for s in adv.get("sources") or ()) if u]
        if urls:
            sources[adv["id"]] = urls[0]
    adv_ids = [a["id"] for a in doc["summary"]["per_advisory"]]
    titles = {a["id"]: a["title"] for a in doc.get("advisories", ())}
    titles.update({a["id"]: a["title"] for a in doc["summary"]["per_advisory"]})
    return {
        "doc": doc,
        "f": fmt,
        "shown": shown,
        "chart": chart(doc, host_shown),
        "banner": stop_text(doc, fmt),
        "adv_ids": adv_ids,
        "sources": sources,
        "rank": {s: i for i, s in enumerate(STATUSES)},
        "open_statuses": OPEN_STATUSES,
        "html_lang": lang.replace("_", "-"),
        "options_text": options_text(doc["run"].get("options") or {}),
        "S": {s: fmt.status(s) for s in STATUSES},
        "T": {adv_id: fmt.title(adv_id, title) for adv_id, title in titles.items()},
        "SUM": {a["id"]: fmt.summary(a["id"], a.get("summary")) for a in doc.get("advisories", ())},
        "SEV": {s: fmt.severity(s) for s in SEVERITY_LABELS},
    }
