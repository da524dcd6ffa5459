"""PDF rendering (headless Chromium, A4, fonts embedded, text extractable) and the zh_CN report in
the browser without missing glyphs ("tofu"). Skipped, with the reason, where Chromium or a CJK
font is not installed (apt-get install chromium fonts-noto-cjk; .ci/run does)."""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import unicodedata
from pathlib import Path

import pytest

from kbfix.report import build_document, render
from kbfix.report.pdf import PdfUnavailableError, find_chromium, html_to_pdf
from kbfix.report.sample import ADVISORIES, hosts, run_info
from templates import TEMPLATE_DIR

pypdf = pytest.importorskip("pypdf")  # third-party test extra, not our module
Image = pytest.importorskip("PIL.Image")

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
CELL = 40  # px per glyph cell in the glyph sheet
COLS = 25
_CJK = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
TOFU = "\u0378"  # an unassigned code point: no font has it, so it always renders as the missing-glyph box


def _has_cjk_font() -> bool:
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return bool(out.stdout.strip())


@needs_chromium
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_pdf_renders_a4_with_text_and_embedded_fonts(lang: str) -> None:
    if lang == "zh_CN" and not _has_cjk_font():
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    doc = build_document(run_info(), hosts(), ADVISORIES)
    data = render(doc, "pdf", lang=lang)
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert 2 <= len(reader.pages) <= 20  # 9 hosts with every host's evidence printed
    for page in reader.pages:
        w, h = float(page.mediabox.width), float(page.mediabox.height)
        assert abs(w - 595) < 2 and abs(h - 842) < 2  # A4 in points
    # NFKC: the CJK font's ToUnicode maps some glyphs to Kangxi radicals (U+2F8F for 行)
    text = unicodedata.normalize("NFKC", re.sub(r"\s+", " ", " ".join(p.extract_text() or "" for p in reader.pages)))
    assert "20261123T120000Z-ab12" in text and "wsus-ber-03.corp.example" in text
    assert "ClientImplementation.SyncUpdates" in text  # evidence lines are text, not pictures
    if lang == "zh_CN":
        flat = text.replace(" ", "")
        assert "合规报告" in flat and "运行状态" in flat and "某些计算机无法从WSUS服务器接收更新" in flat
    # Embedded: a TrueType/CFF program (FontFile*) or, for the CJK OpenType collection Skia cannot
    # subset as CFF, Type3 glyph procedures, which are outlines stored in the PDF itself.
    fonts = []
    for page in reader.pages:
        for font in (page["/Resources"].get("/Font") or {}).values():
            font = font.get_object()
            desc = font.get("/FontDescriptor") or (font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
                                                   if "/DescendantFonts" in font else None)
            desc = desc.get_object() if desc is not None else None
            type3 = font.get("/Subtype") == "/Type3" and "/CharProcs" in font
            fonts.append((str(font.get("/BaseFont")), type3 or (
                desc is not None and any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")))))
    assert fonts and all(embedded for _name, embedded in fonts), fonts


def test_pdf_without_chromium_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PdfUnavailableError, match="chromium"):
        html_to_pdf(b"<html></html>", chromium=str(tmp_path / "no-such-chromium"))


def _font_stack() -> str:
    css = (TEMPLATE_DIR / "report.css").read_text(encoding="utf-8")
    m = re.search(r"body\{font:[^;]*?px/[\d.]+ ([^;]+);", css)
    assert m, "report.css body font stack not found"
    return m.group(1)


def _glyph_sheet(chars: list[str]) -> str:
    cells = "".join(f'<span class="c">{c}</span>' for c in [*chars, *([TOFU] * COLS)])
    return (
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><style>"
        f"html,body{{margin:0;padding:0;background:#fff}}body{{font:28px/{CELL}px {_font_stack()};"
        f"display:grid;grid-template-columns:repeat({COLS},{CELL}px);grid-auto-rows:{CELL}px}}"
        ".c{display:block;width:40px;height:40px;overflow:hidden;text-align:center;color:#000}"
        f"</style></head><body>{cells}</body></html>"
    )


def _cells(png: Path, n: int) -> list[bytes]:
    img = Image.open(png).convert("L")
    out = []
    for i in range(n):
        x, y = (i % COLS) * CELL, (i // COLS) * CELL
        out.append(img.crop((x, y, x + CELL, y + CELL)).tobytes())
    return out


def _tofu_cells(chars: list[str], tmp: Path, env: dict[str, str] | None = None) -> list[str]:
    """Characters of `chars` that Chromium draws as the missing-glyph box (or not at all) with the
    report's font stack: each is drawn in its own cell and compared with a cell holding U+0378."""
    html = tmp / "sheet.html"
    html.write_text(_glyph_sheet(chars), encoding="utf-8")
    png = tmp / "sheet.png"
    rows = (len(chars) + COLS) // COLS + 1
    with tempfile.TemporaryDirectory(prefix="kbfix-chromium-") as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--force-device-scale-factor=1", f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={COLS * CELL},{rows * CELL}", html.as_uri()],
                       capture_output=True, timeout=120, check=False, env=env)
    assert png.is_file(), "Chromium wrote no screenshot"
    cells = _cells(png, len(chars) + 1)
    tofu, blank = cells[len(chars)], bytes([255]) * (CELL * CELL)
    assert tofu != blank, "the reference missing-glyph cell drew nothing"
    return [c for c, img in zip(chars, cells, strict=False) if img in (tofu, blank)]


def _zh_chars() -> list[str]:
    html = render(build_document(run_info(), hosts(), ADVISORIES), "html", lang="zh_CN").decode("utf-8")
    return sorted(set(_CJK.findall(html)))


@needs_chromium
def test_zh_cn_report_has_no_tofu(tmp_path: Path) -> None:
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    chars = _zh_chars()
    assert len(chars) > 100  # the whole zh_CN report: labels, titles, descriptions
    assert _tofu_cells(chars, tmp_path) == []


@needs_chromium
def test_tofu_detector_sees_missing_glyphs(tmp_path: Path) -> None:
    # The same check with fontconfig limited to DejaVu (no CJK): every Chinese character is tofu,
    # so the test above would fail on a machine without fonts-noto-cjk.
    dejavu = Path("/usr/share/fonts/truetype/dejavu")
    if not dejavu.is_dir():
        pytest.skip("fonts-dejavu not installed")
    conf = tmp_path / "fonts.conf"
    conf.write_text(f'<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig><dir>{dejavu}</dir>'
                    f"<cachedir>{tmp_path / 'fc-cache'}</cachedir></fontconfig>", encoding="utf-8")
    import os

    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    chars = _zh_chars()[:50]
    assert len(_tofu_cells(chars, tmp_path, env)) == len(chars)
