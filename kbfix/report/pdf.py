"""PDF rendering: the HTML report printed to A4 by headless Chromium.

Chromium (Debian package `chromium`) is the browser the report tests already use; its print path
applies the report's print CSS (`@page A4`, every host's evidence open) and embeds the fonts it
used as subsets (Skia's PDF backend always does), so the PDF reads the same on a machine without
them, CJK included when a CJK font (Debian `fonts-noto-cjk`) is installed. No Python package is
needed; `pypdf` (test extra) is only used to check the result.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
PRINT_TIMEOUT_SECONDS = 120.0
#: How kbfix starts headless Chromium for any page (the PDF here, the benchmark's screenshot).
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",  # kbfix may run as root in CI containers, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)
_PRINT_FLAGS = (*HEADLESS_FLAGS, "--no-pdf-header-footer")


class PdfUnavailableError(RuntimeError):
    """No headless Chromium to print with (install Debian's `chromium`), or printing failed."""


def find_chromium() -> str | None:
    """The Chromium binary, or None when none is installed."""
    for cand in CHROMIUM_CANDIDATES:
        if Path(cand).is_file():
            return cand
    return shutil.which("chromium") or shutil.which("chromium-browser")


def html_to_pdf(html: bytes, *, chromium: str | None = None) -> bytes:
    """Print report HTML (bytes, self-contained) to PDF bytes on A4. The page loads from a
    private temporary directory with a fresh profile; the report's CSP forbids any fetch.
    Raises PdfUnavailableError (no Chromium, non-zero exit, no output, over PRINT_TIMEOUT_SECONDS)."""
    exe = chromium or find_chromium()
    if exe is None:
        raise PdfUnavailableError("PDF needs headless Chromium: apt-get install chromium (and fonts-noto-cjk for zh_CN)")
    with tempfile.TemporaryDirectory(prefix="kbfix-pdf-") as tmp:
        src = Path(tmp) / "report.html"
        out = Path(tmp) / "report.pdf"
        src.write_bytes(html)
        try:
            proc = subprocess.run(
                [exe, *_PRINT_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", f"--print-to-pdf={out}", src.as_uri()],
                capture_output=True, timeout=PRINT_TIMEOUT_SECONDS, check=False,
            )
        except subprocess.TimeoutExpired:
            raise PdfUnavailableError(f"Chromium did not print within {PRINT_TIMEOUT_SECONDS:g} s") from None
        except OSError as exc:
            raise PdfUnavailableError(f"cannot start Chromium ({exe}): {exc.strerror or exc}; "
                                      "apt-get install chromium") from None
        data = out.read_bytes() if out.is_file() else b""
        if not data.startswith(b"%PDF"):
            tail = proc.stderr.decode("utf-8", "replace")[-300:]
            raise PdfUnavailableError(f"Chromium printed no PDF (exit {proc.returncode}): {tail}")
        return data


__all__ = ["HEADLESS_FLAGS", "PdfUnavailableError", "find_chromium", "html_to_pdf"]
