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


#: Groups every inventory has (Ansible's implicit groups): offered only to a word very close to them.
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})

#: difflib ratio a choice needs to be offered: a close match only (a typo), never "something".
CLOSE = 0.75

#: The ratio an implicit group needs (`groups` is not a typo of `ungrouped`; `ungroup` is).
VERY_CLOSE = 0.85


def did_you_mean(word: str, choices: Iterable[str], *, implicit: Iterable[str] = IMPLICIT_GROUPS) -> str:
    """Return ` (did you mean 'x'?)` for the closest of `choices` to `word`, or an empty string.

    Only close matches (difflib ratio ≥ `CLOSE`, case-insensitive; the choice is shown as spelt)
    are offered, and `implicit` names (`all`, `ungrouped`) only at ≥ `VERY_CLOSE`: they are in
    every inventory, so a loose match with them says nothing about what was meant.
    """
    special = {str(c).lower() for c in implicit}
    spelt: dict[str, str] = {}
    for c in choices:
        spelt.setdefault(str(c).lower(), str(c))
    target = str(word).lower()
    best, best_ratio = None, 0.0
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(target)
    for low, original in spelt.items():
        matcher.set_seq1(low)
        if matcher.real_quick_ratio() < CLOSE or matcher.quick_ratio() < CLOSE:
            continue
        ratio = matcher.ratio()
        if ratio >= (VERY_CLOSE if low in special else CLOSE) and ratio > best_ratio:
            best, best_ratio = original, ratio
    return f" (did you mean {best!r}?)" if best is not None else ""
