"""The one sanitiser for text that reaches the operator's terminal from outside kbfix.

Host answers (computer name, OS caption, culture, agent stderr, WSUS update titles), inventory
values and log lines are attacker-controlled on a compromised host. Printed raw, ECMA-48
control sequences act on the terminal: an OSC title change, a screen clear, an OSC 8 link, a
carriage return that overwrites a line, a forged second line (issue 20 finding 4). And Rich
reads `[...]` in any string it prints as markup, so `[wsus.exe sha256 …]` vanished from the plan
review (finding 10).

- `safe_text(s)`: every C0/C1 control (TAB, LF and CR included), DEL and the Unicode
  bidirectional controls become visible escapes (`\\x1b`, `\\n`, `\\u202e`); other text is kept.
- `safe_markup(s)`: `safe_text` then Rich markup escaping, for values interpolated into a
  markup string.
- `cell(s)`: a Rich `Text` (never parsed as markup) of `safe_text(s)`, for table cells.
- `SanitizingFilter`: a logging filter that applies `safe_text` to each record's final message.

Every printer in `kbfix.cli` and `kbfix.progress` goes through these.
"""

from __future__ import annotations

import logging
import re

from rich.markup import escape
from rich.text import Text

# C0 controls, DEL, C1 controls; the bidi embedding/override/isolate controls and marks
# (Unicode TR9: U+200E/F, U+061C, U+202A-202E, U+2066-2069) that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: object) -> str:
    """`str(value)` with every control character shown as a visible escape (see module doc).
    None becomes the empty string. Pure; idempotent on its own output."""
    if value is None:
        return ""
    text = str(value)
    return _UNSAFE.sub(_visible, text) if _UNSAFE.search(text) else text


# Rich's own tag pattern (rich.markup.RE_TAGS): `rich.markup.escape` escapes only these.
_TAG_OR_BRACKET = re.compile(r"(\[[a-z#/@][^[]*?\])|\[")


def safe_markup(value: object) -> str:
    """`safe_text(value)` with Rich markup escaped: safe to interpolate into a markup string.

    `rich.markup.escape` escapes tag-shaped brackets only, but Rich also turns a plain `\\[` that
    is not a tag into `[`: so every other `[` gets a backslash too, and a host's `\\[` prints as
    itself."""
    return _TAG_OR_BRACKET.sub(lambda m: m.group(1) or "\\[", escape(safe_text(value)))


def cell(value: object, style: str = "") -> Text:
    """A Rich `Text` of `safe_text(value)`: printed literally, never read as markup."""
    return Text(safe_text(value), style=style)


class SanitizingFilter(logging.Filter):
    """Makes each record's message terminal-safe (`safe_text`) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace `msg`/`args` by the sanitised final message; never drops a record."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: show it as given
            message = str(record.msg)
        record.msg, record.args = safe_text(message), None
        return True
