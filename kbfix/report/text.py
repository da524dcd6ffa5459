"""Escaping of data (hostnames, reasons, log lines) for each output format.

Data never becomes markup: HTML relies on Jinja2 autoescape; these helpers cover the formats
that have no autoescape (Markdown, CSV, XML) and control characters that would break any of them.
"""

from __future__ import annotations

import re

# C0 controls other than TAB/LF/CR, and DEL: invisible or structure-breaking in every format.
_C0 = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Unicode bidirectional controls (LRE…RLO, LRI…PDI, LRM/RLM/ALM): invisible, and able to make
# text read differently from what it is (CVE-2021-42574 "Trojan Source"); shown as <U+202E>.
_BIDI = re.compile("[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")
# Characters XML 1.0 cannot carry at all (§2.2 Char production), even escaped.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Markdown inline markup and the GFM table separator; `<`/`>`/`&` go to entities so inline HTML is
# inert. Block markers (`#`, `-`, `1.`) need no escape: cells and inline text never start a line.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")
# First characters a spreadsheet treats as the start of a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def visible_controls(text: str) -> str:
    """Replace C0 control characters (not TAB/LF/CR) by their Unicode control pictures
    (U+2400 block) and bidirectional controls by `<U+XXXX>`, so a log line stays verbatim to
    the reader but cannot act as a control or reorder what is shown."""
    text = _C0.sub(lambda m: chr(0x2400 + ord(m.group()) if m.group() != "\x7f" else 0x2421), text)
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 forbids (ElementTree escapes the rest)."""
    return _XML_INVALID.sub("", text)


def md_cell(value: object) -> str:
    """One Markdown table cell / inline text: markup and `|` backslash-escaped, HTML characters as
    entities, newlines as `<br>`, controls made visible. None → empty."""
    if value is None:
        return ""
    text = visible_controls(str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def md_code(value: object) -> str:
    """An inline Markdown code span holding `value` verbatim (outside tables): delimited by one
    backtick more than its longest backtick run, newlines as spaces. None → empty."""
    if value is None:
        return ""
    body = visible_controls(str(value)).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    if not body:
        return ""
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or (body.startswith(" ") and body.endswith(" ")) else ""
    return f"{ticks}{pad}{body}{pad}{ticks}"


def md_fence(text: str) -> str:
    """A fenced code block holding `text` verbatim: the fence is one backtick longer than the longest
    backtick run inside, so the content cannot close it."""
    body = visible_controls(text).replace("\r\n", "\n").replace("\r", "\n")
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}"


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading `'` when it starts like a formula."""
    if value is None:
        return ""
    text = visible_controls(str(value))
    return "'" + text if text.startswith(_FORMULA_START) else text
