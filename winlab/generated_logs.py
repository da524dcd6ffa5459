"""Large synthetic log files for scale tests: written once to a temp file, never held in memory.

A fixture file entry `{generate: {size_mb: 200, seed: 1, matches: [...]}}` becomes a
`GeneratedContent`: on first use it writes `size_mb` MiB of WindowsUpdate.log-style filler lines
(CRLF) with the `matches` lines placed at seeded pseudo-random line positions, in the requested
encoding, to a private temp directory removed when the content object is collected. Host
clones share one `GeneratedContent`, so a site of 1000 clones writes the file once.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import BinaryIO

_BLOCK_LINES = 8192  # lines per generated block (about 1 MiB of filler)


def _filler_block(rng: random.Random) -> list[str]:
    comps = ["AU", "Agent", "Report", "DnldMgr", "Misc", "Setup", "PT", "Service"]
    texts = [
        "  * Online = Yes; Ignore download priority = No",
        "Validating signature for C:\\WINDOWS\\SoftwareDistribution\\SelfUpdate\\wuident.cab",
        "  # Approval type: Scheduled (Policy)",
        "Obtained proxy information for http://wsus01/ClientWebService/client.asmx",
        "  * Found 0 updates and 23 categories in search; evaluated appl. rules of 512 out of 921 deployed entities",
        "REPORT EVENT: {00000000-0000-0000-0000-000000000000}\t2008-07-30 12:00:00:000+0200\t1\t147\t101",
    ]
    lines = []
    for i in range(_BLOCK_LINES):
        ms = rng.randrange(1000)
        lines.append(
            f"2008-07-30\t12:{(i // 60) % 60:02d}:{i % 60:02d}:{ms:03d}\t {rng.randrange(400, 1600)}\t"
            f"{rng.randrange(0x100, 0xfff):x}\t{rng.choice(comps)}\t{rng.choice(texts)}"
        )
    return lines


def _codec(encoding: str, ansi_codec: str = "cp1252") -> tuple[str, bytes]:
    if encoding == "utf-16le":
        return "utf-16-le", b"\xff\xfe"
    if encoding == "utf-16be":
        return "utf-16-be", b"\xfe\xff"
    if encoding == "utf-8-bom":
        return "utf-8", b"\xef\xbb\xbf"
    return (ansi_codec if encoding == "ansi" else "utf-8"), b""


def write_generated_log(
    target: Path, size_mb: float, seed: int, matches: list[str], encoding: str = "utf-8", ansi_codec: str = "cp1252"
) -> int:
    """Write the log to `target` and return its size in bytes (about `size_mb` MiB).

    Each line of `matches` appears exactly once, in order, at seeded positions spread over the
    file. `encoding`: utf-8 | utf-8-bom | utf-16le | utf-16be (with BOM) | ansi (in
    `ansi_codec`, the host culture's codepage)."""
    rng = random.Random(seed)
    codec, bom = _codec(encoding, ansi_codec)
    block_lines = _filler_block(rng)
    block = ("\r\n".join(block_lines) + "\r\n").encode(codec)
    n_blocks = max(1, round(size_mb * (1 << 20) / len(block)))
    total_lines = n_blocks * _BLOCK_LINES
    positions = sorted(rng.sample(range(total_lines), len(matches))) if matches else []
    by_block: dict[int, list[tuple[int, str]]] = {}
    for pos, text in zip(positions, matches, strict=True):
        by_block.setdefault(pos // _BLOCK_LINES, []).append((pos % _BLOCK_LINES, text))
    with target.open("wb") as out:
        out.write(bom)
        for b in range(n_blocks):
            inserts = by_block.get(b)
            if not inserts:
                out.write(block)
                continue
            lines = list(block_lines)
            for idx, text in inserts:
                lines[idx] = text
            out.write(("\r\n".join(lines) + "\r\n").encode(codec))
    return target.stat().st_size


class GeneratedContent:
    """`hoststate.Content` of a generated log, written lazily on first `size`/`open`.

    Thread-safe; the temp directory is removed when this object is garbage collected or at exit.
    """

    def __init__(
        self, size_mb: float, seed: int, matches: list[str], encoding: str = "utf-8", ansi_codec: str = "cp1252"
    ) -> None:
        self.size_mb = size_mb
        self.seed = seed
        self.matches = list(matches)
        self.encoding = encoding
        self.ansi_codec = ansi_codec
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._size = 0

    def _ensure(self) -> Path:
        with self._lock:
            if self._path is None:
                tmp = Path(tempfile.mkdtemp(prefix="kbfix-lab-log-"))
                weakref.finalize(self, shutil.rmtree, tmp, True)
                path = tmp / "generated.log"
                self._size = write_generated_log(path, self.size_mb, self.seed, self.matches, self.encoding, self.ansi_codec)
                self._path = path
            return self._path

    @property
    def size(self) -> int:
        """Size in bytes (generates the file on first call)."""
        self._ensure()
        return self._size

    def open(self) -> BinaryIO:
        """A buffered reader of the generated file."""
        return self._ensure().open("rb")
