"""Render the sample report as HTML and load it in a real headless Chromium (Debian's `chromium`).

Checks that the page loads with no console messages (CSP violations, script errors and failed
fetches all land there), that the inline script ran (`data-js="ok"` on <html>, seen in the DOM
Chromium dumps) and writes a PNG screenshot. Usage:

    .venv/bin/python benchmarks/report_screenshot.py [--lang en] [--out docs/report-screenshot.png]

Exit status 0 when all checks pass, 1 when a check fails, 2 when Chromium is not installed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kbfix.report import build_document, write_report  # noqa: E402
from kbfix.report.pdf import HEADLESS_FLAGS, PdfUnavailableError, find_chromium, html_to_pdf  # noqa: E402
from kbfix.report.sample import ADVISORIES, hosts, run_info  # noqa: E402

BASE_FLAGS = (*HEADLESS_FLAGS, "--hide-scrollbars")  # kbfix's own Chromium flags (kbfix.report.pdf)
TIMEOUT_SECONDS = 90.0
# Chromium prints page console messages to stderr as `[pid:tid:time:INFO:CONSOLE:<line>] "<text>", source: <url> (<line>)`.
_CONSOLE = re.compile(r":CONSOLE[:(]\d+|Refused to|Uncaught ", re.IGNORECASE)


@dataclass
class BrowserCheck:
    """What the browser saw: console lines, whether the inline script ran, the screenshot path."""

    console: list[str] = field(default_factory=list)
    script_ran: bool = False
    screenshot: Path | None = None
    screenshot_bytes: int = 0

    @property
    def ok(self) -> bool:
        """No console messages, script ran, a non-empty screenshot exists."""
        return not self.console and self.script_ran and self.screenshot_bytes > 0


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)


def check_html(html: Path, png: Path, chromium: str, *, width: int = 1280, height: int = 2000) -> BrowserCheck:
    """Load `html` twice in headless Chromium: once dumping the DOM with console logging on, once
    taking a `width`×`height` px screenshot to `png`. Raises subprocess.TimeoutExpired after
    TIMEOUT_SECONDS per launch."""
    result = BrowserCheck()
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="kbfix-chromium-") as profile:
        common = [chromium, *BASE_FLAGS, f"--user-data-dir={profile}"]
        dom = _run([*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url])
        result.console = [ln for ln in dom.stderr.splitlines() if _CONSOLE.search(ln)]
        result.script_ran = 'data-js="ok"' in dom.stdout
        png.parent.mkdir(parents=True, exist_ok=True)
        shot = _run([*common, f"--screenshot={png}", f"--window-size={width},{height}", url])
        if png.is_file():
            result.screenshot = png
            result.screenshot_bytes = png.stat().st_size
        elif shot.returncode:
            result.console.append(f"screenshot failed (exit {shot.returncode}): {shot.stderr[-500:]}")
    return result


def print_pdf(html: Path, pdf: Path, chromium: str) -> bytes:
    """Print `html` to `pdf` the way `kbfix report --format pdf` does (kbfix.report.pdf.html_to_pdf:
    Chromium's print path, the print CSS applies); returns the PDF bytes (empty when printing failed)."""
    try:
        data = html_to_pdf(html.read_bytes(), chromium=chromium)
    except PdfUnavailableError:
        return b""
    pdf.write_bytes(data)
    return data


def main(argv: list[str] | None = None) -> int:
    """Render, check, screenshot; print a JSON summary. See the module docstring for exit codes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", default="en")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "report-screenshot.png")
    ap.add_argument("--html", type=Path, default=None, help="keep the rendered HTML here")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("chromium not installed (apt-get install chromium); nothing checked", file=sys.stderr)
        return 2
    doc = build_document(run_info(), hosts(), ADVISORIES)
    with tempfile.TemporaryDirectory(prefix="kbfix-report-") as tmp:
        html = args.html or Path(tmp) / "report.html"
        write_report(doc, html, lang=args.lang)
        check = check_html(html, args.out, chromium)
    print(
        json.dumps(
            {
                "chromium": chromium,
                "console": check.console,
                "script_ran": check.script_ran,
                "screenshot": str(check.screenshot),
                "screenshot_bytes": check.screenshot_bytes,
                "ok": check.ok,
            },
            indent=2,
        )
    )
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
