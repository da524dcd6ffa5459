"""The agent's per-line and per-MiB cost path in log.scan, counted on its source (issue 13 item 12).

No PowerShell runs here, so the agent's speed on Windows PowerShell 2.0 cannot be timed; what can
be measured is its cost path: how many .NET calls (method invocations, `[Type]::Member(...)` and
`$obj.Method(...)`, found with the real PowerShell grammar, tree-sitter-powershell) the agent
makes for every line it reads line by line, and for every 1 MiB block its prefilter skips, and
whether a line can raise an exception (a first-chance .NET exception costs tens of microseconds
on .NET 2.0, orders of magnitude more than a call).

    .venv/bin/python benchmarks/agent_line_cost.py            # the shipped agent
    .venv/bin/python benchmarks/agent_line_cost.py OLD.ps1    # another version, e.g. `git show REV:remoting/agent.ps1`

Counts are static: every call in a function body counts once, whichever branch it is on, so
they are upper bounds per line (the matching branch also runs `New-Map`, `.Add`, `.ToArray`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import tree_sitter
import tree_sitter_powershell

AGENT = Path(__file__).resolve().parents[1] / "remoting" / "agent.ps1"
# Functions on the per-line path (read line by line) and the per-block path (prefilter).
PER_LINE = ("Find-Newline", "Decode-Line")
PER_BLOCK = ("Skip-QuietBlock", "Find-LastNewline")
LINES_PER_MIB = (1 << 20) // 120  # a WSUS/WUA log line is about 120 bytes


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _functions(source: bytes) -> dict[str, tree_sitter.Node]:
    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language())).parse(source)
    out = {}
    for n in _walk(tree.root_node):
        if n.type == "function_statement":
            name = next((c for c in n.children if c.type == "function_name"), None)
            if name is not None:
                out[source[name.start_byte:name.end_byte].decode()] = n
    return out


def _count(node: tree_sitter.Node, source: bytes) -> tuple[int, int]:
    """(.NET invocations, try statements) inside `node`."""
    calls = sum(1 for n in _walk(node) if n.type == "invokation_expression")
    tries = sum(1 for n in _walk(node) if n.type == "try_statement")
    return calls, tries


def _scan_loop(fn: tree_sitter.Node, source: bytes) -> tree_sitter.Node | None:
    """The per-line `while ($true)` loop of Invoke-ScanFile."""
    for n in _walk(fn):
        if n.type == "while_statement" and b"$true" in source[n.start_byte:n.start_byte + 40]:
            return n
    return None


def report(path: Path) -> list[tuple[str, str, str]]:
    """Rows (what, .NET calls, try blocks) for the agent at `path`."""
    source = path.read_bytes()
    fns = _functions(source)
    rows = []
    total_line = 0
    line_tries = 0
    loop = _scan_loop(fns["Invoke-ScanFile"], source)
    if loop is not None:
        c, t = _count(loop, source)
        rows.append(("Invoke-ScanFile per-line loop body", str(c), str(t)))
        total_line += c
        line_tries += t
    for name in PER_LINE:
        if name in fns:
            c, t = _count(fns[name], source)
            rows.append((name, str(c), str(t)))
            total_line += c
            line_tries += t
    total_block = 0
    for name in PER_BLOCK:
        if name in fns:
            c, _t = _count(fns[name], source)
            rows.append((f"{name} (once per 1 MiB block)", str(c), "-"))
            total_block += c
    rows.append(("per line read line by line (upper bound)", str(total_line),
                 "exception per ANSI line" if line_tries and "catch" in source[fns["Decode-Line"].start_byte:fns["Decode-Line"].end_byte].decode() else "none"))
    rows.append((f"per MiB read line by line (~{LINES_PER_MIB} lines of 120 B)", str(total_line * LINES_PER_MIB), ""))
    rows.append(("per MiB skipped by the prefilter", str(total_block), ""))
    return rows


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else AGENT
    rows = report(path)
    width = max(len(r[0]) for r in rows)
    print(f"{path}")
    print(f"{'path':<{width}}  {'.NET calls':>10}  try/exception")
    for what, calls, tries in rows:
        print(f"{what:<{width}}  {calls:>10}  {tries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
