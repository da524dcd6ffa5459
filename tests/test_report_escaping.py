"""Property tests of the per-format escaping helpers: arbitrary text can never change the
structure of a Markdown table, a CSV row or a JUnit document, and stays readable."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET

from defusedxml import ElementTree as SafeET
from hypothesis import given, settings
from hypothesis import strategies as st

from kbfix.report.text import csv_cell, md_cell, md_code, md_fence, visible_controls, xml_text

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


@given(TEXT)
def test_md_cell_has_no_bare_pipe_or_newline_or_tag(s: str) -> None:
    out = md_cell(s)
    assert "\n" not in out and "\r" not in out
    # every pipe in the output is escaped by an odd run of backslashes
    for m in re.finditer(r"(\\*)\|", out):
        assert len(m.group(1)) % 2 == 1
    assert "<" not in out.replace("<br>", "") and ">" not in out.replace("<br>", "")


@given(TEXT)
def test_md_fence_cannot_be_closed_from_inside(s: str) -> None:
    out = md_fence(s)
    first, *body, last = out.split("\n")
    fence = first[: len(first) - len("text")]
    assert last == fence and set(fence) == {"`"}
    assert all(not ln.startswith(fence) for ln in body)


@given(st.lists(TEXT, min_size=1, max_size=5))
def test_csv_cells_round_trip_as_one_row_and_are_never_formulas(cells: list[str]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([csv_cell(c) for c in cells])
    rows = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert len(rows) == 1 and len(rows[0]) == len(cells)
    for raw, cell in zip(cells, rows[0], strict=True):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert cell in (visible_controls(raw), "'" + visible_controls(raw))


@settings(max_examples=60)
@given(TEXT)
def test_xml_text_always_serializes_and_parses_back(s: str) -> None:
    root = ET.Element("testcase", name=xml_text(s))
    root.text = xml_text(s)
    parsed = SafeET.fromstring(ET.tostring(root, encoding="utf-8"))
    assert (parsed.text or "") == xml_text(s).replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.get("name") == xml_text(s)


def test_visible_controls_keeps_tabs_and_newlines() -> None:
    assert visible_controls("a\tb\nc\x00d\x1be\x7f") == "a\tb\nc␀d␛e␡"


@given(TEXT)
def test_md_code_span_holds_text_verbatim(s: str) -> None:
    out = md_code(s)
    body = visible_controls(s).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    if not body:
        assert out == ""
        return
    ticks = re.match(r"`+", out).group(0)
    assert out.endswith(ticks)
    inner = out[len(ticks) : len(out) - len(ticks)]
    # the delimiter run never occurs inside, so the span cannot close early
    assert all(len(run) != len(ticks) for run in re.findall(r"`+", inner))
    assert inner in (body, f" {body} ")


def test_bidi_controls_are_shown_not_obeyed() -> None:
    """A right-to-left override (U+202E) in a log line or host name would make `exe.txt` read
    as `txt.exe`; every format shows it as `<U+202E>` instead (CVE-2021-42574)."""
    line = "upload evil\u202etxt.exe done \u2066x\u2069"
    shown = visible_controls(line)
    assert shown == "upload evil<U+202E>txt.exe done <U+2066>x<U+2069>"
    for rendered in (md_cell(line), csv_cell(line), md_fence(line)):
        assert "\u202e" not in rendered and "\u2066" not in rendered
