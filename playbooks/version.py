"""Windows four-part file/product versions (`major.minor.build.revision`) and version ranges.

Versions compare as integer tuples, never as strings (`3.1.6001.66` > `3.1.6001.9`). Missing
parts count as 0, so `4.00.6221` equals `4.00.6221.0000`. ConfigMgr 2007 compares its
`Full Version` on the first three parts (`Version.prefix(3)`): an SP1 site may report
4.00.6221.0000 or 4.00.6221.1000 (KB954474 applies to both RTM 4.00.5931 and SP1 4.00.6221).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, total_ordering
from typing import Any

_PART_RE = re.compile(r"^\s*(\d{1,10})(?:\.(\d{1,10})){0,3}\s*$")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CLAUSE_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*([0-9.]+)\s*$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A Windows version: up to four non-negative integers, padded with zeros to four.

    `Version.parse("3.1.6001.66")`; str() gives the dotted form without padding leading zeros
    (`4.0.6221.0`). Raises ValueError for text that is not 1–4 dot-separated integers.
    """

    parts: tuple[int, int, int, int]

    @classmethod
    def parse(cls, text: str | Version) -> Version:
        """Parse `a[.b[.c[.d]]]`; a Version passes through. Raises ValueError on anything else."""
        if isinstance(text, Version):
            return text
        if cls is Version and type(text) is str:
            return _parse_text(text)
        if not isinstance(text, str) or not _PART_RE.match(text):
            raise ValueError(f"not a Windows version: {text!r}")
        nums = [int(p) for p in text.strip().split(".")]
        nums += [0] * (4 - len(nums))
        return cls((nums[0], nums[1], nums[2], nums[3]))

    @classmethod
    def maybe(cls, text: object) -> Version | None:
        """Parse, or None when `text` is empty/None/not a version (for facts that may be absent)."""
        if isinstance(text, Version):
            return text
        if not isinstance(text, str):
            return None
        try:
            return cls.parse(text)
        except ValueError:
            return None

    def prefix(self, n: int) -> Version:
        """The first `n` parts, the rest zeroed (ConfigMgr compares `prefix(3)`)."""
        kept = self.parts[:n] + (0,) * (4 - n)
        return Version((kept[0], kept[1], kept[2], kept[3]))

    def __lt__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Version.parse(other)
        if not isinstance(other, Version):
            return NotImplemented
        return self.parts < other.parts

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Version.maybe(other)
        if not isinstance(other, Version):
            return NotImplemented
        return self.parts == other.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


@lru_cache(maxsize=4096)
def _parse_text(text: str) -> Version:
    """`Version.parse` of a str, remembered (cost, issue 19: the playbooks parse the same few
    versions on every host, `V('3.1.6001.66')`; a Version is immutable, so one can be shared).
    Raises ValueError (not remembered)."""
    if not _PART_RE.match(text):
        raise ValueError(f"not a Windows version: {text!r}")
    nums = [int(p) for p in text.strip().split(".")]
    nums += [0] * (4 - len(nums))
    return Version((nums[0], nums[1], nums[2], nums[3]))


@dataclass(frozen=True)
class VersionRange:
    """A conjunction of comparisons, e.g. `>=3.1.6001.0, <3.1.6002` (a bare version means `==`).

    `parts` limits how many version parts are compared (3 for ConfigMgr, 4 otherwise).
    An empty spec (`""` or `*`) matches every version. Raises ValueError on a malformed spec.
    """

    clauses: tuple[tuple[str, Version], ...]
    parts: int = 4

    @classmethod
    def parse(cls, spec: str, parts: int = 4) -> VersionRange:
        """Parse a comma-separated spec. Raises ValueError naming the bad clause."""
        text = spec.strip()
        if text in ("", "*"):
            return cls((), parts)
        clauses = []
        for raw in text.split(","):
            m = _CLAUSE_RE.match(raw)
            if not m:
                raise ValueError(f"bad version clause {raw.strip()!r} in {spec!r}")
            clauses.append((m.group(1) or "==", Version.parse(m.group(2)).prefix(parts)))
        return cls(tuple(clauses), parts)

    def contains(self, version: Version | str) -> bool:
        """True when `version` (its first `parts` parts) satisfies every clause."""
        v = Version.parse(version).prefix(self.parts)
        return all(_OPS[o](v, bound) for o, bound in self.clauses)

    def __str__(self) -> str:
        return ", ".join(f"{o}{b}" for o, b in self.clauses) or "*"
