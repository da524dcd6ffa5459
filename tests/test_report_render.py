"""Renderings of a document: every format and language, escaping of hostile data, template
overrides, file writing. Hostile text rides in a log line, a host name and a reason."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET

from kbfix.report import (
    LANGUAGES,
    TEXT_FORMATS,
    UnknownFormatError,
    UnknownLanguageError,
    build_document,
    format_for_path,
    render,
    write_report,
)
from kbfix.report.sample import ADVISORIES, hosts, run_info
from playbooks.model import Evidence, Finding, HostResult, LogLine, Status

EVIL_LINE = "2026-11-22 UTC Error w3wp.12 <script>alert(1)</script> &amp; &lt;b&gt; | `x` *y* =SUM(A1)\x00\x1b[31m"
EVIL_HOST = "evil|<img src=x onerror=alert(2)>.corp"
EVIL_REASON = "=HYPERLINK(\"http://x\")\n| injected | row |\r\n</testcase><x>"


def evil_result() -> HostResult:
    line = LogLine(file=r"C:\logs\SoftwareDistribution.log", offset=7, text=EVIL_LINE, before=["```"], after=["]]>"])
    ev = Evidence(probe="log.scan <probe>", lines=[line], observed_at=datetime(2026, 11, 23, 12, tzinfo=timezone.utc))
    return HostResult.from_findings(
        EVIL_HOST,
        [Finding(advisory="KB954960", status=Status.NON_COMPLIANT, reason=EVIL_REASON, evidence=[ev])],
        site="-site", roles=["@role"], started=datetime(2026, 11, 23, 12, tzinfo=timezone.utc),
    )


@pytest.fixture(scope="module")
def doc() -> dict:
    return build_document(run_info(), [*hosts(), evil_result()], ADVISORIES)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_every_format_and_language_renders(doc: dict, fmt: str, lang: str) -> None:
    out = render(doc, fmt, lang=lang)
    text = out.decode("utf-8")
    assert "wsus-ber-03.corp.example" in text
    if fmt in ("html", "md", "csv", "junit"):
        for h in doc["hosts"]:
            if h["name"] != EVIL_HOST:
                assert h["name"] in text


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self.pre: list[str] = []
        self._in: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if "script" in self._in:
            self.scripts.append(data)
        if "pre" in self._in:
            self.pre.append(data)


def test_html_shows_hostile_text_as_text(doc: dict) -> None:
    html = render(doc, "html").decode("utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&amp;amp;" in html  # the literal `&amp;` of the log line, escaped once more
    assert "<img src=x" not in html
    p = _Collector()
    p.feed(html)
    p.close()
    assert p.tags.count("script") == 1  # only the report's own inline script
    assert p.tags.count("img") == 0
    assert not any(name.startswith("on") for name, _v in p.attrs)
    # the parsed text of the <pre> is the log line verbatim (controls shown as control pictures)
    pre = "".join(p.pre)
    assert "<script>alert(1)</script> &amp; &lt;b&gt; | `x` *y* =SUM(A1)␀␛[31m" in pre
    assert EVIL_HOST in html.replace("&lt;", "<").replace("&gt;", ">")


def test_html_is_self_contained(doc: dict) -> None:
    html = render(doc, "html").decode("utf-8")
    assert "default-src 'none'" in html
    assert not re.search(r"<(link|script|img)[^>]+(href|src)=[\"']?(https?:)?//", html)
    assert "@media print" in html and "size:A4" in html
    assert "<svg" in html


def test_markdown_structure_survives(doc: dict) -> None:
    md = render(doc, "md").decode("utf-8")
    host_rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "corp" in ln]
    header = next(ln for ln in md.splitlines() if ln.startswith("| Host |"))
    cols = len(re.findall(r"(?<!\\)\|", header))
    for row in host_rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == cols, row
    assert "<script>" not in md.replace("```", "").split("## Evidence per host")[0]
    assert "<img" not in md.split("## Evidence per host")[0]
    # the log line sits verbatim inside a fence longer than any backtick run it contains
    block = md[md.index("C:\\logs\\SoftwareDistribution.log @7") - 200:]
    fence = re.search(r"(`{3,})text\n", block)
    assert fence and len(fence.group(1)) >= 4
    assert "<script>alert(1)</script> &amp; &lt;b&gt;" in block
    # the hostile reason cannot add a table row or heading
    assert "\n| injected | row |" not in md


def test_csv_structure_and_formula_guard(doc: dict) -> None:
    data = render(doc, "csv")
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body)
    # 11 findings + 1 unreachable host without findings + 1 evil finding
    assert len(body) == 13
    evil = next(r for r in body if "evil" in r[0])
    assert evil[0] == EVIL_HOST
    assert evil[2] == "'-site" and evil[3] == "'@role"
    assert evil[header.index("Reason")].startswith("'=HYPERLINK")
    assert EVIL_LINE.replace("\x00", "␀").replace("\x1b", "␛") in evil[header.index("Evidence")]
    for r in body:
        for cell in r:
            assert not cell.startswith(("=", "+", "-", "@")), cell


def test_junit_structure(doc: dict) -> None:
    data = render(doc, "junit")
    root = SafeET.fromstring(data)
    assert root.tag == "testsuites"
    # the first suite is the run: its properties and one testcase (passes: the sample did not stop early)
    run = root.find("testsuite")
    assert run.get("name") == "run" and run.get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in run.findall("properties/property")}
    assert props["operator"] == "CORP\\ops-anna" and props["id"] == "20261123T120000Z-ab12"
    cases = root.findall("./testsuite/testcase")[1:]
    assert len(cases) == 13
    assert int(root.get("tests")) == 14
    failures = [c for c in cases if c.find("failure") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    # failing: non_compliant x2 (one evil), unknown, failed, unreachable
    assert len(failures) == 5 == int(root.get("failures"))
    # skipped: 3 not_applicable + 1 skipped
    assert len(skipped) == 4 == int(root.get("skipped"))
    evil = next(c for c in cases if c.get("name") == EVIL_HOST)
    body = evil.find("failure").text
    assert "<script>alert(1)</script> &amp; &lt;b&gt;" in body
    assert "\x00" not in body and "\x1b" not in body
    assert evil.find("failure").get("type") == "non_compliant"
    assert sum(int(s.get("tests")) for s in root.findall("testsuite")) == 14
    unreachable = next(c for c in cases if c.get("name") == "wsus-ber-04.corp.example")
    assert unreachable.get("time") == "30.000"
    assert unreachable.find("failure").get("type") == "unreachable"
    assert "connection refused" in unreachable.find("failure").get("message")


def test_translations_in_output(doc: dict) -> None:
    de = render(doc, "html", lang="de").decode("utf-8")
    assert "Nicht konform" in de and "Konformitätsbericht" in de
    assert "Einige Computer erhalten keine Updates vom WSUS-Server" in de  # Microsoft's German KB954960 title
    assert "23.11.2026, 12:00:00 UTC" in de
    zh = render(doc, "md", lang="zh_CN").decode("utf-8")
    assert "不合规" in zh and "2026年11月23日" in zh
    da_csv = render(doc, "csv", lang="da").decode("utf-8-sig")
    assert da_csv.splitlines()[0].startswith("Vært,")
    nl = render(doc, "junit", lang="nl").decode("utf-8")
    assert "Niet conform" in nl
    # evidence stays verbatim in every language
    for lang in LANGUAGES:
        assert "Unexpected DeploymentAction for update 1293995" in render(doc, "html", lang=lang).decode()


def test_template_override(tmp_path: Path, doc: dict) -> None:
    (tmp_path / "report.md").write_text("OVERRIDE {{ doc.run.id }} {{ _('Hosts') }} {{ doc.hosts[0].name|md }}\n")
    out = render(doc, "md", lang="de", template_dirs=[tmp_path]).decode()
    assert out.startswith("OVERRIDE 20261123T120000Z-ab12 Hosts cm-ber-01.corp.example")
    # an override of the stylesheet alone is picked up by the packaged report.html
    (tmp_path / "report.css").write_text("body{color:#123456}")
    html = render(doc, "html", template_dirs=[tmp_path]).decode()
    assert "body{color:#123456}" in html and "--ok:#1a7f37" not in html
    # without the override dir, the packaged templates are used
    assert not render(doc, "md").decode().startswith("OVERRIDE")


def test_hostname_is_data_not_template(doc: dict) -> None:
    result = evil_result().model_copy(update={"host": "{{ 7*7 }}{% raw %}x"})
    d = build_document(run_info(), [result], ADVISORIES)
    for fmt in ("html", "md", "csv", "junit"):
        text = render(d, fmt).decode("utf-8")
        assert "49x" not in text
        assert "{{ 7*7 }}{% raw %}x" in text or r"\{\{ 7\*7 \}\}\{% raw %\}x" in text


def test_format_for_path_and_errors(doc: dict) -> None:
    assert format_for_path(Path("a/r.JSON")) == "json"
    assert format_for_path(Path("r.htm")) == "html"
    assert format_for_path(Path("r.html")) == "html"
    assert format_for_path(Path("r.md")) == "md"
    assert format_for_path(Path("r.csv")) == "csv"
    assert format_for_path(Path("r.xml")) == "junit"
    assert format_for_path(Path("r.pdf")) == "pdf"
    assert format_for_path(Path("r.HDF.json")) == "hdf"
    with pytest.raises(UnknownFormatError):
        format_for_path(Path("r.docx"))
    with pytest.raises(UnknownFormatError):
        render(doc, "docx")
    with pytest.raises(UnknownLanguageError):
        render(doc, "html", lang="fr")


def test_write_report_atomic(tmp_path: Path, doc: dict) -> None:
    target = tmp_path / "sub" / "report.json"
    assert write_report(doc, target) == target
    assert json.loads(target.read_text(encoding="utf-8")) == doc
    (tmp_path / "x.html").write_text("old")
    write_report(doc, tmp_path / "x.html", lang="nl")
    assert "Samenvatting" in (tmp_path / "x.html").read_text(encoding="utf-8")
    with pytest.raises(UnknownFormatError):
        write_report(doc, tmp_path / "x.txt")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# Metadata shaped as playbooks.advisory_meta returns it: citations with the URL in <...>, a
# reworded title, severity "high", and a source without any URL.
PLAYBOOK_META = {
    "KB954960": {
        "title": "WSUS 3.0 cannot deliver updates to clients that have Office 2003 installed",
        "sources": [
            "Microsoft KB954960 article <https://support.microsoft.com/kb/954960>",
            ".NET Framework 2.0 resource Argument_AddingDuplicate (localized in the language packs)",
            "javascript:alert(3) <javascript:alert(4)>",
        ],
        "severity": "high",
        "summary": "Clients with Office 2003 fail to synchronize (0x8024400E).",
    },
}


def test_source_citations_and_playbook_metadata() -> None:
    from kbfix.report.env import source_parts

    assert source_parts("Microsoft KB954960 article <https://support.microsoft.com/kb/954960>") == {
        "label": "Microsoft KB954960 article",
        "url": "https://support.microsoft.com/kb/954960",
    }
    assert source_parts("https://x.example/a.") == {"label": "https://x.example/a", "url": "https://x.example/a"}
    assert source_parts("no url here") == {"label": "no url here", "url": None}

    d = build_document(run_info(), hosts(), PLAYBOOK_META)
    html = render(d, "html", lang="de").decode()
    assert '<a href="https://support.microsoft.com/kb/954960">Microsoft KB954960 article</a>' in html
    assert "Argument_AddingDuplicate" in html
    assert 'href="javascript' not in html
    assert "hoch" in html  # severity "high" translated
    # the reworded title still gets the published German title
    assert "Einige Computer erhalten keine Updates vom WSUS-Server" in html
    md = render(d, "md", lang="en").decode()
    assert "Microsoft KB954960 article: https://support.microsoft.com/kb/954960" in md
    # a non-http "URL" stays inert text: no autolink `<javascript:…>`, no `](javascript:…)` link
    assert "&lt;javascript:alert(4)&gt;" in md
    assert "<javascript:" not in md and "](javascript" not in md
