"""Host patterns in inventory files: `name:port` splitting and `[01:20]` / `[a:f]` range expansion.

Follows Ansible's rules (ansible-core `ansible/plugins/inventory/__init__.py::_expand_hostpattern`,
`ansible/inventory/helpers`/`ansible/plugins/inventory/__init__.py::expand_hostname_range` and
`ansible/parsing/utils/addresses.py::parse_address`): `[beg:end]` or `[beg:end:step]`, inclusive;
a begin with a leading zero fixes the width and needs an end of the same width; single-letter
alphabetic ranges over `a-zA-Z`; several ranges in one name multiply. Expansion is capped
(`MAX_EXPANSION`) so a typo such as `h[0:999999999]` is an error, not an out-of-memory.
"""

from __future__ import annotations

import re
import string

MAX_EXPANSION = 200_000  # hosts from one pattern; far above any real fleet, far below a memory blow-up

_PORT_RE = re.compile(r"^(?P<host>.*?):(?P<port>[0-9]+)$")
_BRACKETED_RE = re.compile(r"^\[(?P<host>[^\]]+)\]:(?P<port>[0-9]+)$")


class RangeError(ValueError):
    """A malformed range (`[1:]`, `[01:5]`, `[z:a]`, too many hosts) or port in a host pattern."""


def detect_range(pattern: str) -> bool:
    """True when `pattern` holds a `[x:y]` range (Ansible's `detect_range`)."""
    start = pattern.find("[")
    return start >= 0 and start < pattern.find(":", start) < pattern.find("]", start)


def _colons_outside_brackets(text: str) -> int:
    depth = 0
    count = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == ":" and depth == 0:
            count += 1
    return count


def split_port(pattern: str) -> tuple[str, int | None]:
    """Split `host:port`, `[v6]:port`, `1.2.3.4:port`; a bare IPv6 address keeps its colons.

    Returns (host pattern, port or None). Raises RangeError for a port outside 1-65535.
    """
    port_text: str | None = None
    host = pattern
    m = _BRACKETED_RE.match(pattern)
    if m and m.group("port") and m.group("host").count(":") >= 2:  # [2001:db8::1]:5986
        host, port_text = m.group("host"), m.group("port")
    elif _colons_outside_brackets(pattern) == 1:  # name:port, 192.0.2.1:port, wsus[01:03]:port
        m2 = _PORT_RE.match(pattern)
        if m2 and m2.group("host"):
            host, port_text = m2.group("host"), m2.group("port")
    if port_text is None:
        return host, None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise RangeError(f"port {port} is outside 1-65535")
    return host, port


def expand_hostname_range(pattern: str) -> list[str]:
    """Expand every `[beg:end(:step)]` in `pattern`, left to right, into host names.

    `wsus[01:03].corp` → wsus01.corp, wsus02.corp, wsus03.corp; `db-[a:c]` → db-a, db-b, db-c.
    Raises RangeError on malformed bounds or more than MAX_EXPANSION names.
    """
    if not detect_range(pattern):
        return [pattern]
    start = pattern.index("[")
    close = pattern.index("]", start)
    head, body, tail = pattern[:start], pattern[start + 1 : close], pattern[close + 1 :]
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError("host range must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise RangeError("host range must specify end value")
    try:
        step = int(step_text)
    except ValueError:
        raise RangeError(f"host range step {step_text!r} is not a number") from None
    if step <= 0:
        raise RangeError("host range step must be a positive number")
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and width != len(end):
        raise RangeError("host range must specify equal-length begin and end formats")
    letters = string.ascii_letters
    seq: list[str]
    if len(beg) == 1 and len(end) == 1 and beg in letters and end in letters:
        i_beg, i_end = letters.index(beg), letters.index(end)
        if i_beg > i_end:
            raise RangeError("host range must have begin <= end")
        seq = list(letters[i_beg : i_end + 1 : step])
    else:
        try:
            i_beg, i_end = int(beg), int(end)
        except ValueError:
            raise RangeError(f"host range [{body}] is neither numeric nor a single-letter range") from None
        if (i_end - i_beg) // step + 1 > MAX_EXPANSION:
            raise RangeError(f"host range [{body}] gives more than {MAX_EXPANSION} hosts")
        seq = [str(i).zfill(width) for i in range(i_beg, i_end + 1, step)]
    if not detect_range(tail):
        return [f"{head}{s}{tail}" for s in seq]
    tails = expand_hostname_range(tail)
    if len(seq) * len(tails) > MAX_EXPANSION:
        raise RangeError(f"host pattern gives more than {MAX_EXPANSION} hosts")
    return [f"{head}{s}{t}" for s in seq for t in tails]


def expand_host_pattern(pattern: str) -> tuple[list[str], int | None]:
    """Ansible's `_expand_hostpattern`: (host names, port or None) for one inventory host entry."""
    host, port = split_port(pattern)
    return expand_hostname_range(host), port
