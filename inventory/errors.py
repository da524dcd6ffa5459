"""The one exception the inventory package raises: `InventoryError`, naming file, line and field.

Every bad input (syntax, unknown key, wrong type, undefined group, duplicate host, invalid port,
missing credential, a limit pattern that matches nothing) ends here, so the CLI can print one
line and exit with code 2 before anything runs. Messages never contain a secret value: callers
describe the problem by field name, never by echoing what was typed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class InventoryError(Exception):
    """Bad inventory input or an unusable limit/credential.

    Attributes: `file` (Path or None), `line` (1-based int or None), `field` (dotted path such as
    `hosts.WSUS01.port`, or None) and `message` (plain text). `str()` gives
    `file:line: field: message`, leaving out the parts that are unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = Path(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file) + (f":{self.line}" if self.line is not None else "")
        elif self.line is not None:
            where = f"line {self.line}"
        parts = [p for p in (where, self.field) if p]
        parts.append(self.message)
        return ": ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor: tell pickle how to rebuild us (multiprocessing workers).
        return (_rebuild, (self.message, self.file, self.line, self.field))


def _rebuild(message: str, file: Path | None, line: int | None, field: str | None) -> InventoryError:
    return InventoryError(message, file=file, line=line, field=field)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest of `choices` to `word`, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
