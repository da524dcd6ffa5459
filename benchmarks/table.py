"""Plain-text tables for the benchmarks' figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table_lines(head: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The header line, then one line per row: columns `head`, left-aligned to the widest cell."""
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in head]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(str(r[h]).ljust(w) for h, w in zip(head, widths, strict=True)) for r in rows]
    return lines
