"""The agent's `log.scan` op, emulated: a streaming, bounded regex scan of one log file.

Semantics (remoting/PROTOCOL.md, op `log.scan`; the agent does the same with a shared-read
FileStream and .NET `Regex` with `IgnoreCase`):

- Encoding: a BOM decides (FF FE utf-16le, FE FF utf-16be, EF BB BF utf-8). Without a BOM the
  first 64 KiB decide: NUL bytes in more than 30% of the odd (even) positions and under 5% of
  the others → utf-16le (utf-16be); only ASCII bytes → `ansi`; valid UTF-8 → `utf-8`; otherwise
  `ansi` = the host culture's codepage (cp1252 for en/da/de/nl, cp936 for zh-CN). Lines of an
  8-bit file without a BOM are decoded one by one: strict UTF-8 when the line is valid UTF-8,
  else the ANSI codepage — a log whose first 64 KiB is ASCII, or that mixes both (a server
  whose culture changed), still reads every line right.
- Offsets are byte offsets of the raw file (UTF-16: 2 bytes per code unit). `start_offset`
  beyond the file size means the file was replaced: the scan starts at 0. With `tail_bytes`
  (and start_offset 0) the scan starts at size - tail_bytes and drops the partial first line.
  A start inside the BOM moves past it.
- Lines end at LF; a CR before it is dropped. A line is cut to `max_line_chars` characters
  (`cut` flags it) and the cut text is what the patterns see (Python `re`, IGNORECASE; the
  agent: .NET Regex, IgnoreCase|CultureInvariant) and what `line`/`before`/`after` show.
  Lines longer than 16 MiB are split (bounded memory; the agent keeps their head instead).
- At most `max_matches` matches per pattern per file; a pattern that reaches it is listed in
  `patterns_full`. When every pattern is full (and every match has its `after` context) the
  scan stops: `end_offset` is then the offset after the last line read, so a follow-up scan
  with `start_offset = end_offset` continues where this one stopped. Otherwise `end_offset`
  is the file size. `patterns_full` lists pattern indexes in the order they filled up.

Speed: the file is read in 1 MiB blocks; a block is split into lines only when a pattern
matches somewhere in the block's text (a C-speed prefilter) or context lines are pending.
The prefilter is exact for patterns without `\\A`, `\\Z` and lookarounds; those are matched
line by line everywhere.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from winlab.hoststate import Content

BLOCK = 1 << 20  # bytes read per step
MAX_LINE_BYTES = 16 << 20  # a longer line is split so memory stays bounded
_SNIFF = 64 * 1024


@dataclass(frozen=True)
class ScanSpec:
    """The arguments of one scan: compiled patterns, limits (counts, lines, chars, bytes)."""

    patterns: tuple[re.Pattern[str], ...]
    max_matches: int = 20
    context: int = 0
    start_offset: int = 0
    tail_bytes: int = 0
    max_line_chars: int = 4096


def detect_encoding(head: bytes) -> tuple[str, int]:
    """(encoding name of the protocol, BOM length) for a file starting with `head`."""
    if head.startswith(b"\xff\xfe"):
        return "utf-16le", 2
    if head.startswith(b"\xfe\xff"):
        return "utf-16be", 2
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    sample = head[:_SNIFF]
    if len(sample) >= 2:
        odd_nuls = sample[1::2].count(0)
        even_nuls = sample[0::2].count(0)
        half = len(sample) // 2
        if odd_nuls > half * 0.3 and even_nuls < half * 0.05:
            return "utf-16le", 0
        if even_nuls > half * 0.3 and odd_nuls < half * 0.05:
            return "utf-16be", 0
    if sample.isascii():
        return "ansi", 0  # nothing tells them apart yet; lines are decoded one by one anyway
    try:
        sample.decode("utf-8")
        return "utf-8", 0
    except UnicodeDecodeError as exc:
        # A multi-byte sequence cut by the sample's end is still UTF-8.
        if exc.start >= len(sample) - 3 and len(sample) == _SNIFF:
            return "utf-8", 0
        return "ansi", 0


def _codec(encoding: str, ansi_codec: str) -> tuple[str, int, bytes]:
    """(Python codec, code unit bytes, newline bytes)."""
    if encoding == "utf-16le":
        return "utf-16-le", 2, b"\n\x00"
    if encoding == "utf-16be":
        return "utf-16-be", 2, b"\x00\n"
    if encoding == "utf-8":
        return "utf-8", 1, b"\n"
    return ansi_codec, 1, b"\n"


def _line_decoder(codec: str, mixed_fallback: str | None) -> Callable[[bytes], str]:
    """How one line's bytes become text: `codec` with replacement, or (8-bit files without a
    BOM, `mixed_fallback` = the ANSI codec) UTF-8 when the line decodes without a replacement
    character (U+FFFD), else the ANSI codepage — the agent's rule (remoting/PROTOCOL.md): it
    tests for U+FFFD instead of catching a decoder exception per ANSI line."""
    if mixed_fallback is None:
        return lambda b: b.decode(codec, "replace")

    def decode(b: bytes) -> str:
        text = b.decode("utf-8", "replace")
        return text if "\ufffd" not in text else b.decode(mixed_fallback, "replace")

    return decode


def _split_lines(raw: bytes, unit: int, nl: bytes) -> Iterator[tuple[int, bytes]]:
    """(relative offset, line bytes without the newline) for each line of `raw` (which ends at a
    line end or at EOF)."""
    pos = 0
    n = len(raw)
    while pos < n:
        i = raw.find(nl, pos)
        while unit == 2 and i >= 0 and (i - pos) % 2:
            i = raw.find(nl, i + 1)
        if i < 0:
            yield pos, raw[pos:]
            return
        yield pos, raw[pos:i]
        pos = i + len(nl)


def _last_line_end(buf: bytes | bytearray, unit: int, nl: bytes) -> int:
    """Index just after the last aligned newline in buf, or 0."""
    i = len(buf)
    while i > 0:
        j = buf.rfind(nl, 0, i)
        if j < 0:
            return 0
        if unit == 1 or j % 2 == 0:
            return j + len(nl)
        i = j + len(nl) - 1  # an aligned newline may overlap this misaligned one
    return 0


def _blocks(f: BinaryIO, start: int, end: int, unit: int, nl: bytes) -> Iterator[tuple[int, bytes]]:
    """(absolute offset, bytes of whole lines) from start to end, in about BLOCK-size pieces."""
    f.seek(start)
    offset = start
    carry = b""
    remaining = end - start
    while remaining > 0 or carry:
        data = f.read(min(BLOCK, remaining)) if remaining > 0 else b""
        remaining -= len(data)
        buf = carry + data
        if not data or remaining <= 0:
            if buf:
                yield offset, buf
            return
        cut = _last_line_end(buf, unit, nl)
        if cut == 0 and len(buf) < MAX_LINE_BYTES:
            carry = buf
            continue
        if cut == 0:
            cut = len(buf) - (len(buf) % unit)
        yield offset, buf[:cut]
        offset += cut
        carry = buf[cut:]


def _prefilter_ok(p: re.Pattern[str]) -> bool:
    return not re.search(r"\\[AZ]|\(\?<?[=!]", p.pattern)


def scan_content(
    content: Content, spec: ScanSpec, ansi_codec: str, *, is_named: bool = True
) -> dict[str, Any]:
    """Scan one file; returns the LogFile dict of PROTOCOL.md minus `path` and `exists`.
    `is_named`: start_offset applies only to the named file (rotated siblings scan from 0)."""
    size = content.size
    with content.open() as f:
        head = f.read(_SNIFF)
        encoding, bom = detect_encoding(head)
        codec, unit, nl = _codec(encoding, ansi_codec)
        start = spec.start_offset if is_named else 0
        skip_partial = False
        if start > size:
            start = 0
        if start == 0 and spec.tail_bytes > 0 and size - spec.tail_bytes > bom:
            start = size - spec.tail_bytes
            skip_partial = True
        start = max(start, bom)
        start += (start - bom) % unit  # a UTF-16 start moves forward to a code unit boundary
        if skip_partial:
            # The window may start exactly at a line start: then nothing is partial.
            f.seek(start - len(nl))
            skip_partial = f.read(len(nl)) != nl
        mixed = ansi_codec if unit == 1 and bom == 0 else None
        result = _scan(f, start, size, spec, codec, unit, nl, skip_partial, mixed)
    result.update({"size": size, "encoding": encoding, "start_offset": start})
    return result


def _scan(
    f: BinaryIO, start: int, size: int, spec: ScanSpec, codec: str, unit: int, nl: bytes, skip_partial: bool,
    mixed: str | None = None,
) -> dict[str, Any]:
    decode = _line_decoder(codec, mixed)
    n_pat = len(spec.patterns)
    counts = [0] * n_pat
    full: list[int] = []  # pattern indexes in the order they reached max_matches
    matches: list[dict[str, Any]] = []
    before: deque[str] = deque(maxlen=spec.context)
    pending: list[tuple[dict[str, Any], int]] = []  # (match, after-lines still wanted)
    prefilter = all(_prefilter_ok(p) for p in spec.patterns)
    # The prefilter searches a whole block: ^ and $ must match at every line boundary.
    block_patterns = [re.compile(p.pattern, p.flags | re.MULTILINE) for p in spec.patterns] if prefilter else []
    # `$` must see LF line ends (a CR before LF is not part of the line); other patterns do not
    # care, and skipping the copy saves about 3 ms per MiB.
    needs_lf = any("$" in p.pattern for p in spec.patterns)
    mlc = spec.max_line_chars
    end_offset = size
    stopped = False

    def cut(s: str) -> str:
        return s if len(s) <= mlc else s[:mlc]

    for block_off, raw in _blocks(f, start, size, unit, nl):
        if skip_partial:
            # The tail window starts mid-line: drop up to the first line end.
            first = _split_lines(raw, unit, nl)
            rel, first_line = next(first)
            consumed = rel + len(first_line) + len(nl)
            block_off, raw = block_off + consumed, raw[consumed:]
            skip_partial = False
            if not raw:
                continue
        text: str | None = None
        if prefilter and not pending:
            # A mixed (8-bit, no BOM) block is searched in both readings: a line matches in one.
            texts = [raw.decode(c, "replace") for c in (("utf-8", mixed) if mixed else (codec,))]
            whole = texts[0]  # as read: context lines keep a CR inside a line, as the line-by-line path does
            if needs_lf:
                # Every CR goes, as agent.ps1's Skip-QuietBlock drops them: a last line that ends
                # in CR without LF (end of file) must still let `x$` through to the line match.
                texts = [t.replace("\r", "") for t in texts]
            text = texts[0]
            active = [p for i, p in enumerate(block_patterns) if counts[i] < spec.max_matches]
            # Lines are matched cut to max_line_chars, so a block with a longer line is matched
            # line by line (a cut line can match where the whole one does not, e.g. `x$`).
            long_line = len(text) > mlc and max(map(len, text.split("\n"))) > mlc
            if not long_line and not any(p.search(t) for p in active for t in texts):
                if spec.context and mixed:
                    # Only the block's final LF ends a line: an empty line before it is a line too
                    # (agent.ps1 walks back from the last LF one LF at a time).
                    body = raw[:-1] if raw.endswith(b"\n") else raw
                    last = body.rsplit(b"\n", spec.context)[-spec.context:]
                    before.extend(cut(_without_cr(decode(t))) for t in last)
                elif spec.context:
                    tail = whole[:-1] if whole.endswith("\n") else whole
                    for t in tail.rsplit("\n", spec.context)[-spec.context:]:
                        before.append(cut(_without_cr(t)))
                continue
        for rel, raw_line in _split_lines(raw, unit, nl):
            line = _without_cr(decode(raw_line))
            shown = cut(line)
            if pending:
                still = []
                for m, want in pending:
                    m["after"].append(shown)
                    if want > 1:
                        still.append((m, want - 1))
                pending = still
            for i, p in enumerate(spec.patterns):
                if counts[i] < spec.max_matches and p.search(shown):
                    counts[i] += 1
                    if counts[i] >= spec.max_matches:
                        full.append(i)
                    m = {
                        "pattern": i,
                        "offset": block_off + rel,
                        "line": shown,
                        "cut": len(line) > mlc,
                        "before": list(before),
                        "after": [],
                    }
                    matches.append(m)
                    if spec.context:
                        pending.append((m, spec.context))
            if spec.context:
                before.append(shown)
            if n_pat and all(c >= spec.max_matches for c in counts) and not pending:
                end_offset = block_off + rel + len(raw_line) + len(nl)
                end_offset = min(end_offset, size)
                stopped = True
                break
        if stopped:
            break
    return {
        "end_offset": end_offset,
        "matches": matches,
        "patterns_full": full,
    }


def _without_cr(line: str) -> str:
    """A line without the CR of its CRLF end (one CR: any other CR is part of the line's text)."""
    return line[:-1] if line.endswith("\r") else line
