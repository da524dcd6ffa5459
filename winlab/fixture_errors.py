"""The one error a fixture file can raise, and how a validation path is spelled in it.

`FixtureError` names the file, the 1-based line and the dotted field path (`hosts[0].os.arch`).
`line_for` finds the line of the nearest spelled ancestor of a path in the YAML marks (the
`(path tuple) → line` map built by `winlab.fixture_yaml.parse_yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FixtureError(ValueError):
    """A fixture that cannot be loaded. `source` is the file name, `line` 1-based or None,
    `field` the dotted path of the offending key; `str()` is `file:line: field: message`."""

    def __init__(self, source: str, line: int | None, field_path: str, message: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field_path or '<document>'}: {message}")
        self.source = source
        self.line = line
        self.field = field_path
        self.message = message


def line_for(loc: tuple[Any, ...], marks: Mapping[tuple[Any, ...], int]) -> int | None:
    """The line of `loc`, or of its nearest ancestor that the file spells; None when unknown."""
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in marks:
            return marks[tuple(loc[:n])]
    return None


def dotted(loc: tuple[Any, ...]) -> str:
    """`('hosts', 0, 'os')` → `hosts[0].os`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out
