"""How the agent and one request reach powershell.exe on the host (remoting/PROTOCOL.md):
the bootstrap command line (-EncodedCommand), the agent cut to the sections its request's ops
use, minified and gzip'd, and the two-line stdin stream the bootstrap reads (`build_stdin`;
`parse_stdin` reads it back as bootstrap.ps1 does, for the lab). The request and response
documents themselves are `remoting.agent_protocol`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from remoting.ops import OPS

AGENT_PATH = Path(__file__).with_name("agent.ps1")
BOOTSTRAP_PATH = Path(__file__).with_name("bootstrap.ps1")
_AGENT_PREFIX = b"KBFIX/1 AGENT-GZIP "
#: The largest agent the lab (as the bootstrap's caller) accepts after decompression: the real
#: agent is ~55 KB; a gzip stream that inflates past this is refused (a decompression bomb).
MAX_AGENT_BYTES = 4 * 1024 * 1024
#: The largest request document the lab inflates (a file.upload chunk of 512 KiB is ~0.7 MB).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_REQUEST_PREFIX = b"KBFIX/1 REQUEST-GZIP "


class RequestFormatError(ValueError):
    """A request document or stdin stream that does not follow protocol v1 (used by the lab)."""


def minify_agent(source: bytes) -> bytes:
    """The agent as it travels: `source` (agent.ps1) without its comments (whole-line ones, and
    trailing ones after code that has no quote before the `#`), blank lines and indentation, LF
    line ends. PowerShell gives leading whitespace and `#` comment
    lines no meaning outside strings, and agent.ps1 has no block comments, here-strings or
    multi-line string literals: tests/test_remoting_messages.py checks with the PowerShell grammar
    that the result has exactly the source's tokens. Saves ~20% of the compressed agent."""
    out = []
    for line in source.replace(b"\r\n", b"\n").split(b"\n"):
        text = line.strip()
        if not text or text.startswith(b"#"):
            continue
        cut = text.find(b" #")
        if cut > 0 and b"'" not in text[:cut] and b'"' not in text[:cut]:
            text = text[:cut].rstrip()  # a trailing comment after code with no string before it
        out.append(text)
    return b"\n".join(out) + b"\n"


#: The lines that open and close a section of agent.ps1 that only some ops use:
#: `# ==== sent only with ops: <op>, <op> …` (or `mutating`: every mutating op of remoting/ops.py)
#: … `# ==== end of section`.
_SECTION_BEGIN = re.compile(rb"^# =+ sent only with ops: ([a-z_., ]+?)[ \t\r]*$", re.M)
_SECTION_END = re.compile(rb"^# =+ end of section[ \t\r]*(?:\n|\Z)", re.M)


def _section_serves(spec: str, op_name: str) -> bool:
    # Case-insensitive, as agent.ps1's op table (a hashtable) and dispatch (a switch) match names.
    name = op_name.lower()  # (callers pass lower-cased names)
    if spec == "mutating":  # an op the table does not know counts as mutating (OpRequest.mutating)
        known = next((s for n, s in OPS.items() if n.lower() == name), None)
        return known is None or known.mutating
    return name in spec.split(",")


@functools.lru_cache(maxsize=4)
def _specs(source: bytes) -> tuple[str, ...]:
    # Cached: scanning the 75 KB source for section lines costs ~0.5 ms, once per agent file.
    return tuple(m.group(1).decode("ascii").replace(" ", "") for m in _SECTION_BEGIN.finditer(source))


def _sections_used(source: bytes, op_names: Iterable[str] | None) -> tuple[bool, ...]:
    if isinstance(op_names, tuple):  # (a session passes the same tuple of names for every host)
        return _used_by_names(_specs(source), op_names)
    return _used_by(_specs(source), None if op_names is None else frozenset(n.lower() for n in op_names))


@functools.lru_cache(maxsize=64)
def _used_by_names(specs: tuple[str, ...], names: tuple[str, ...]) -> tuple[bool, ...]:
    return _used_by(specs, frozenset(n.lower() for n in names))


@functools.lru_cache(maxsize=64)
def _used_by(specs: tuple[str, ...], names: frozenset[str] | None) -> tuple[bool, ...]:
    # Cached: a fleet sends the same few op sets to every host (~0.1 ms each to work out).
    return tuple(names is None or any(_section_serves(s, n) for n in names) for s in specs)


def agent_for_ops(source: bytes, op_names: Iterable[str] | None) -> bytes:
    """`source` (agent.ps1) without the sections none of `op_names` uses (None: every section
    stays). A section runs from a `# ==== sent only with ops: a.b, c.d` line (or `…: mutating`,
    every mutating op) to the next `# ==== end of section` line, both included, and holds only
    functions its ops' dispatch arms call (tests/test_agent_ps1_syntax.py checks that nothing
    else calls into it). A check run's agent so carries no code that changes a host, and is
    ~25% smaller compressed. Raises ValueError for unbalanced or nested section lines."""
    return _strip_sections(source, _sections_used(source, op_names))


def _strip_sections(source: bytes, used: tuple[bool, ...]) -> bytes:
    begins, ends = list(_SECTION_BEGIN.finditer(source)), list(_SECTION_END.finditer(source))
    if len(begins) != len(ends) or len(begins) != len(used):
        raise ValueError("agent.ps1: every `sent only with ops` line needs its `end of section` line")
    out, pos = [], 0
    for begin, end, keep in zip(begins, ends, used, strict=True):
        if not pos <= begin.start() < end.start():
            raise ValueError("agent.ps1: sections must not nest or overlap")
        out.append(source[pos : end.end()] if keep else source[pos : begin.start()])
        pos = end.end()
    out.append(source[pos:])
    return b"".join(out)


@functools.lru_cache(maxsize=2)
def _agent_source(path: str, mtime_ns: int, size: int) -> bytes:
    return Path(path).read_bytes()


@functools.lru_cache(maxsize=8)
def _wire_agent(path: str, mtime_ns: int, size: int, used: tuple[bool, ...]) -> bytes:
    # Keyed on the file's identity, so an edited agent (or a test's stand-in) is read again, and
    # on which sections stay: a fleet's requests need only a few variants.
    return minify_agent(_strip_sections(_agent_source(path, mtime_ns, size), used))


#: Seconds a file's stat is reused (`_stat`): the agent and bootstrap are read per session to
#: notice an edited file, and a stat is a system call that lets go of the GIL (cost, issue 19).
STAT_REUSE_S = 1.0
_STATS: dict[Path, tuple[float, os.stat_result]] = {}


def _stat(path: Path) -> os.stat_result:
    """`path.stat()`, at most once per STAT_REUSE_S seconds per path. Raises OSError."""
    now = time.monotonic()
    hit = _STATS.get(path)
    if hit is not None and now - hit[0] < STAT_REUSE_S:
        return hit[1]
    st = path.stat()
    _STATS[path] = (now, st)
    return st


def _identity() -> tuple[str, int, int]:
    st = _stat(AGENT_PATH)
    return str(AGENT_PATH), st.st_mtime_ns, st.st_size


def read_agent_bytes(ops: Iterable[str] | None = None) -> bytes:
    """The shipped agent script as sent on the wire (`minify_agent` of agent.ps1, UTF-8, LF),
    with only the sections the op names `ops` use (`agent_for_ops`; None: the whole agent)."""
    ident = _identity()
    return _wire_agent(*ident, _sections_used(_agent_source(*ident), ops))


def compress_agent(agent: bytes) -> bytes:
    """The agent as it travels: gzip (RFC 1952, one member, no file name, mtime 0), made with
    zopfli (a slower, denser deflate encoder, ~4% smaller than zlib's level 9; computed once per
    process) when installed, else zlib level 9. Any deflate stream inflates the same: the
    bootstrap uses .NET's System.IO.Compression.GZipStream, which exists since .NET Framework 2.0
    (the PowerShell 2.0 runtime) and reads RFC 1952 (learn.microsoft.com, "GZipStream Class").
    ~55 KB of script (~42 KB minified) become ~11 KB."""
    try:
        import zopfli.gzip
    except ImportError:
        return gzip.compress(agent, compresslevel=9, mtime=0)
    return bytes(zopfli.gzip.compress(agent, numiterations=5))  # ~0.05 s of CPU; 15 saves 15 bytes


_AGENT_LINE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _agent_line(path: str, mtime_ns: int, size: int, used: tuple[bool, ...]) -> bytes:
    # The arguments only key the cache on the file's identity, so an edited agent (or a test's
    # stand-in) is read again; compressing and base64-encoding 55 KB for every host would cost
    # about 3 ms of CPU.
    return _AGENT_PREFIX + base64.b64encode(compress_agent(_wire_agent(path, mtime_ns, size, used))) + b"\n"


def gunzip_bounded(data: bytes, cap: int, what: str) -> bytes:
    """Inflate one complete gzip member of at most `cap` bytes (as GZipStream reads it).
    Raises RequestFormatError for data that is not one complete gzip member, has trailing
    bytes, or inflates past `cap` (a decompression bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise RequestFormatError(f"the {what} line is not gzip data ({exc})") from exc
    if len(out) > cap or inflater.unconsumed_tail:
        raise RequestFormatError(f"the {what} inflates past {cap} bytes")
    if not inflater.eof or inflater.unused_data:
        raise RequestFormatError(f"the {what} line is not exactly one complete gzip member")
    return out


@functools.lru_cache(maxsize=4)
def gunzip_agent(data: bytes) -> bytes:
    """Inflate a gzip'd agent, at most `MAX_AGENT_BYTES` bytes (see `gunzip_bounded`), cached per
    compressed bytes: a fleet receives the same agent on every host."""
    return gunzip_bounded(data, MAX_AGENT_BYTES, "agent")


def read_bootstrap_text() -> str:
    """The shipped bootstrap script text (LF line ends, no BOM)."""
    return BOOTSTRAP_PATH.read_text(encoding="utf-8").replace("\r\n", "\n")


@functools.lru_cache(maxsize=4)
def _command_line(text: str | None, mtime_ns: int) -> tuple[str, tuple[str, ...]]:
    # Cached (keyed on the bootstrap file's mtime): a fleet sends the same command to every host.
    text = read_bootstrap_text() if text is None else text
    encoded = base64.b64encode(text.encode("utf-16-le")).decode("ascii")
    return "powershell.exe", ("-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encoded)


def command_line(bootstrap_text: str | None = None) -> tuple[str, list[str]]:
    """The WS-Man Command for one agent invocation: ("powershell.exe", [args...]).
    The bootstrap is passed with -EncodedCommand (base64 of UTF-16LE), as PowerShell documents."""
    program, args = _command_line(bootstrap_text, _stat(BOOTSTRAP_PATH).st_mtime_ns if bootstrap_text is None else 0)
    return program, list(args)


def _shipped_agent_line(ops: Iterable[str] | None) -> bytes:
    ident = _identity()
    # One thread computes the line; the others (a fleet's first wave of forks) wait for it
    # instead of each compressing the agent too (lru_cache does not hold concurrent misses).
    with _AGENT_LINE_LOCK:
        return _agent_line(*ident, _sections_used(_agent_source(*ident), ops))


def _request_line(request_doc: bytes) -> bytes:
    return _REQUEST_PREFIX + base64.b64encode(gzip_request(request_doc)) + b"\n"


#: RFC 1952 member header: deflate, no flags, mtime 0, XFL 2 (slowest, densest), OS 255 (unknown).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
#: The largest request tail whose deflate is kept (a check's ops are ~6 KB; an upload chunk's
#: ~0.7 MB document is compressed as it comes, not kept).
_CACHED_TAIL_MAX = 64 * 1024


@functools.lru_cache(maxsize=16)
def _deflated_tail(tail: bytes) -> bytes:
    return zlib.compress(tail, 9, -zlib.MAX_WBITS)  # a raw deflate stream, its last block final


def gzip_request(request_doc: bytes) -> bytes:
    """The request line's gzip member (RFC 1952) of `request_doc`. Its first two lines (the
    protocol line and the fresh nonce) travel in a stored deflate block (RFC 1951 3.2.4, a
    non-final block, byte-aligned), the rest (the limit and the op lines, the same for every
    host of a check) as a deflate stream computed once per distinct text: a stream from a fresh
    compressor refers to nothing before it, so it may follow any complete byte-aligned block
    (as pigz joins its parallel parts). Inflates to exactly `request_doc`; deflating the ~6 KB
    document for every host cost ~30 us of CPU. Other documents are compressed whole."""
    first = request_doc.find(b"\n")
    cut = request_doc.find(b"\n", first + 1) + 1 if first >= 0 else 0
    tail = request_doc[cut:]
    if cut <= 0 or cut > 0xFFFF or len(tail) > _CACHED_TAIL_MAX:
        return gzip.compress(request_doc, compresslevel=9, mtime=0)
    head = request_doc[:cut]
    crc = zlib.crc32(tail, zlib.crc32(head))
    return b"".join((_GZIP_HEADER, struct.pack("<BHH", 0, cut, cut ^ 0xFFFF), head, _deflated_tail(tail),
                     struct.pack("<II", crc, len(request_doc) & 0xFFFFFFFF)))


def build_stdin(request_doc: bytes, agent: bytes | None = None, *, ops: Iterable[str] | None = None) -> bytes:
    """The ASCII stdin stream for the bootstrap: the gzip'd agent line then the gzip'd request line.
    `agent`: the agent script bytes (default: the shipped agent.ps1 with the sections the op
    names `ops` use, `read_agent_bytes(ops)`; None: the whole agent)."""
    if agent is None:
        agent_line = _shipped_agent_line(ops)
    else:
        agent_line = _AGENT_PREFIX + base64.b64encode(compress_agent(agent)) + b"\n"
    return agent_line + _request_line(request_doc)


@functools.lru_cache(maxsize=8)
def _split_agent_line(agent_line: bytes) -> tuple[bytes, bytes]:
    # (the line's last len % 3 bytes, base64 of all the bytes before them). Keyed on the line
    # itself: hashing a bytes object is done once per object, and the line comes from a cache.
    cut = len(agent_line) - len(agent_line) % 3
    return agent_line[cut:], base64.b64encode(agent_line[:cut])


def stdin_base64(request_doc: bytes, *, ops: Iterable[str] | None = None) -> bytes:
    """base64 of `build_stdin(request_doc, ops=ops)`: the text the WS-Man Send envelopes carry
    (split with `remoting.chunking.split_base64`). The agent line is the same for every host of a
    run, so the base64 of its first multiple-of-3 bytes is computed once and only the rest (its
    last 0-2 bytes and the request line) per request: base64 of a concatenation is the
    concatenation of the parts' base64 when the first part's length is a multiple of 3
    (RFC 4648 section 4: each 3 bytes become 4 characters, no padding before the end). Encoding
    the ~20 KB stream cost ~40 us of CPU per host."""
    tail, head_b64 = _split_agent_line(_shipped_agent_line(ops))
    return head_b64 + base64.b64encode(tail + _request_line(request_doc))


def parse_stdin(stdin: bytes) -> tuple[bytes, bytes]:
    """Split a bootstrap stdin stream into (agent bytes, inflated; request document), reading it
    as bootstrap.ps1 does. Raises RequestFormatError when either line is missing, not base64,
    or the agent is not a bounded gzip stream (see `gunzip_agent`)."""
    agent = request = None
    for raw in stdin.splitlines():
        line = raw.strip()
        try:
            if line.startswith(_AGENT_PREFIX):
                agent = gunzip_agent(base64.b64decode(line[len(_AGENT_PREFIX):], validate=True))
            elif line.startswith(_REQUEST_PREFIX):
                request = gunzip_bounded(base64.b64decode(line[len(_REQUEST_PREFIX):], validate=True), MAX_REQUEST_BYTES, "request")
        except (binascii.Error, ValueError) as exc:
            if isinstance(exc, RequestFormatError):
                raise
            raise RequestFormatError("stdin line is not valid base64") from exc
    if agent is None or request is None:
        raise RequestFormatError("stdin lacks the agent or the request line")
    return agent, request
