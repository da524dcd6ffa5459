"""The HTML report in a real headless Chromium (Debian's `chromium` package): it loads with no
console message (CSP violations, script errors, blocked fetches), its inline script runs, and a
screenshot is produced. Skipped, with the reason, where Chromium is not installed."""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from kbfix.report import STATUSES, build_document, write_report
from kbfix.report.sample import ADVISORIES, hosts, run_info

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report_screenshot.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("report_screenshot", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shot() -> ModuleType:
    mod = _load()
    if mod.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium); headless HTML check not run")
    return mod


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_html_loads_clean_in_chromium(shot: ModuleType, tmp_path: Path, lang: str) -> None:
    html = write_report(build_document(run_info(), hosts(), ADVISORIES), tmp_path / "report.html", lang=lang)
    check = shot.check_html(html, tmp_path / "shot.png", shot.find_chromium(), height=1200)
    assert check.console == []
    assert check.script_ran
    png = (tmp_path / "shot.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_console_errors_are_detected(shot: ModuleType, tmp_path: Path) -> None:
    # The same checker must notice a broken page, or the test above proves nothing.
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'\"></head><body><script>undefinedFunction();</script>"
        '<img src="https://example.invalid/x.png"></body></html>',
        encoding="utf-8",
    )
    check = shot.check_html(bad, tmp_path / "bad.png", shot.find_chromium(), height=300)
    assert any("undefinedFunction" in ln for ln in check.console), check.console
    assert any("Content Security Policy" in ln for ln in check.console), check.console
    assert not check.script_ran


def test_prints_on_a4_with_all_evidence(shot: ModuleType, tmp_path: Path) -> None:
    doc = build_document(run_info(), hosts(), ADVISORIES)
    html = write_report(doc, tmp_path / "report.html")
    pdf = shot.print_pdf(html, tmp_path / "report.pdf", shot.find_chromium())
    assert pdf.startswith(b"%PDF")
    boxes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf)
    # A4 is 595 x 842 pt (210 x 297 mm)
    assert boxes and all(abs(float(w) - 595) < 2 and abs(float(h) - 842) < 2 for w, h in boxes)
    # closed <details> (compliant hosts) are printed too: removing them must shorten the PDF
    closed = html.read_text(encoding="utf-8")
    stripped = re.sub(r'<details class="h" id="h\d+">.*?</details>', "", closed, flags=re.S)
    assert stripped != closed
    (tmp_path / "stripped.html").write_text(stripped, encoding="utf-8")
    short = shot.print_pdf(tmp_path / "stripped.html", tmp_path / "stripped.pdf", shot.find_chromium())
    assert len(re.findall(rb"/Type /Page\b", short)) < len(re.findall(rb"/Type /Page\b", pdf))


# Appended to a copy of the report: drives the report's own sort and filter code the way a reader
# would (clicks, typing) and records the outcome in the DOM that Chromium dumps.
_DRIVER = """<script>
(function(){
var t=document.getElementById("hosts"),th=t.tHead.rows[0].cells;
function names(){return Array.prototype.map.call(t.tBodies[0].rows,function(r){return r.cells[0].textContent;}).join(",");}
th[0].click();th[0].click();var desc=names();
th[5].click();var byStatus=names();
var q=document.getElementById("q");q.value="ber-0";q.dispatchEvent(new Event("input"));
var shown=Array.prototype.filter.call(t.tBodies[0].rows,function(r){return r.style.display!=="none";}).length;
var out=document.createElement("pre");out.id="driver";
out.textContent=JSON.stringify({desc:desc,byStatus:byStatus,shown:shown});document.body.appendChild(out);
})();
</script>"""


def test_host_table_sorts_and_filters_in_chromium(shot: ModuleType, tmp_path: Path) -> None:
    import json
    import subprocess

    doc = build_document(run_info(), hosts(), ADVISORIES)
    html = write_report(doc, tmp_path / "report.html").read_text(encoding="utf-8")
    page = tmp_path / "driven.html"
    page.write_text(html.replace("</body>", _DRIVER + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [shot.find_chromium(), *shot.BASE_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=shot.TIMEOUT_SECONDS, check=False,
        ).stdout
    m = re.search(r'<pre id="driver">(.*?)</pre>', dom)
    assert m, "the driver script did not run"
    got = json.loads(m.group(1).replace("&quot;", '"'))
    names = sorted(h["name"] for h in doc["hosts"])
    assert got["desc"].split(",") == names[::-1]
    # status column sorts by rank (best first), not alphabetically by label
    order = got["byStatus"].split(",")
    rank = {h["name"]: STATUSES.index(h["status"]) for h in doc["hosts"]}
    assert [rank[n] for n in order] == sorted(rank[n] for n in order)
    # "ber-0" matches the four wsus-ber-0N hosts and cm-ber-01
    assert got["shown"] == 5
