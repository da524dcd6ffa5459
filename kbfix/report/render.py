"""Rendering a document to bytes in one format, choosing a format from a file name, and writing
a report file atomically (temporary file in the same directory, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kbfix.report.env import environment
from kbfix.report.i18n import check_language
from kbfix.report.tabular import render_csv, render_junit
from kbfix.report.view import context

FORMATS: tuple[str, ...] = ("json", "html", "md", "csv", "junit", "hdf", "pdf")
_EXTENSIONS = {".json": "json", ".html": "html", ".htm": "html", ".md": "md", ".csv": "csv", ".xml": "junit",
               ".pdf": "pdf"}
TEXT_FORMATS: tuple[str, ...] = tuple(f for f in FORMATS if f != "pdf")
"""The formats rendered in-process as UTF-8 text (pdf needs headless Chromium)."""
_HDF_SUFFIX = ".hdf.json"  # `report.hdf.json`: Heimdall Data Format
_TEMPLATES = {"html": "report.html", "md": "report.md"}


class UnknownFormatError(ValueError):
    """A format name or file extension kbfix cannot render."""


def render_json(doc: Mapping[str, Any]) -> bytes:
    """The document as compact UTF-8 JSON (one line, non-ASCII kept, trailing newline). Compact
    because `json` only uses its C encoder without indentation: 4x faster on a fleet report;
    pretty-print with `jq .` or `python -m json.tool` when reading by eye."""
    return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def render(
    doc: Mapping[str, Any], fmt: str, *, lang: str = "en", template_dirs: Sequence[Path] = ()
) -> bytes:
    """`doc` (a built document) rendered as `fmt` (json|html|md|csv|junit|hdf|pdf) in `lang`, bytes
    (UTF-8 text, or a PDF). `template_dirs` are searched before the packaged templates (HTML,
    Markdown and PDF). Raises UnknownFormatError, UnknownLanguageError, jinja2.TemplateError
    (broken override), PdfUnavailableError (pdf without headless Chromium)."""
    check_language(lang)
    if fmt == "json":
        return render_json(doc)
    if fmt == "hdf":
        from kbfix.report.hdf import render_hdf

        return render_hdf(doc, lang)
    if fmt == "pdf":
        from kbfix.report.pdf import html_to_pdf

        return html_to_pdf(render(doc, "html", lang=lang, template_dirs=template_dirs))
    if fmt == "csv":
        return render_csv(doc, lang)
    if fmt == "junit":
        return render_junit(doc, lang)
    name = _TEMPLATES.get(fmt)
    if name is None:
        raise UnknownFormatError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    template = environment(lang, template_dirs).get_template(name)
    return template.render(context(doc, lang)).encode("utf-8")


def format_for_path(path: Path) -> str:
    """The format implied by a file name: .hdf.json (Heimdall), .json, .html/.htm, .md, .csv,
    .xml (JUnit), .pdf. Raises UnknownFormatError for any other extension."""
    if Path(path).name.lower().endswith(_HDF_SUFFIX):
        return "hdf"
    fmt = _EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UnknownFormatError(
            f"cannot tell the report format of {path}; use one of {', '.join(sorted([*_EXTENSIONS, _HDF_SUFFIX]))}"
        )
    return fmt


def write_report(
    doc: Mapping[str, Any], path: Path, *, lang: str = "en", template_dirs: Sequence[Path] = ()
) -> Path:
    """Render `doc` in the format of `path`'s extension and write it atomically: a reader sees the
    old file or the complete new one, never a partial report. The file is mode 0644 (reports hold
    host names and log lines, never secrets). Returns the path written.
    Raises UnknownFormatError, UnknownLanguageError, PdfUnavailableError, OSError."""
    path = Path(path)
    write_bytes_atomic(path, render(doc, format_for_path(path), lang=lang, template_dirs=template_dirs))
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same folder, fsync, rename), mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
