"""An emulated host's files: path spelling, immutable contents (in memory or on disk), file
entries with their version resources, and the file half of `HostState` (`FilesState`, mixed
into `winlab.hoststate.HostState`). Paths are case-insensitive; `\\\\` runs collapse, `/` means `\\`.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Protocol

DEFAULT_MTIME = datetime(2008, 8, 1, 12, 0, 0, tzinfo=timezone.utc)


def norm_path(path: str) -> str:
    """Canonical spelling of a Windows file path: `/` → `\\`, repeated `\\` folded (a leading
    `\\\\` of a UNC path is kept), no trailing `\\`. Case is kept; compare with `.lower()`."""
    p = path.strip().replace("/", "\\")
    unc = p.startswith("\\\\")
    p = re.sub(r"\\{2,}", r"\\", p).rstrip("\\")
    if len(p) == 2 and p[1] == ":":
        p += "\\"
    return "\\" + p if unc else p


class Content(Protocol):
    """The immutable bytes of a file. `size` in bytes; `open()` gives a fresh binary reader."""

    @property
    def size(self) -> int:
        """Size in bytes."""
        ...

    def open(self) -> BinaryIO:
        """A fresh binary reader positioned at 0; the caller closes it."""
        ...


@dataclass(frozen=True)
class BytesContent:
    """File content held in memory (shared, never copied, between host clones)."""

    data: bytes

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.data)

    def open(self) -> BinaryIO:
        """A reader over the bytes (BytesIO shares the buffer until written)."""
        return io.BytesIO(self.data)


@dataclass(frozen=True)
class DiskContent:
    """File content in a file on the lab machine (large generated logs): never held in memory."""

    path: Path

    @property
    def size(self) -> int:
        """Length in bytes (stat of the backing file)."""
        return self.path.stat().st_size

    def open(self) -> BinaryIO:
        """A buffered reader on the backing file."""
        return self.path.open("rb")


def content_sha256(content: Content) -> str:
    """Lower-case hex SHA-256 of the content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with content.open() as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file. `version` is what the agent reads as FileVersion (from the File*Part fields),
    `version_string` the FileVersion string resource, `content` the bytes (None = synthesised
    from the path and version so that size and hash are stable)."""

    path: str
    content: Content | None = None
    version: str | None = None
    version_string: str | None = None
    product_version: str | None = None
    mtime: datetime = DEFAULT_MTIME

    def data(self) -> Content:
        """The file's content, synthesising a small stable body for version-only entries."""
        if self.content is not None:
            return self.content
        return BytesContent(b"MZ\x90\x00kbfix-lab " + self.path.lower().encode() + b" " + (self.version or "").encode())

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.data().size


class FilesState:
    """The file methods of `HostState` (which holds `files` and `lock`).

    files: path (lower case) → FileEntry. Every method takes the host lock.
    """

    files: dict[str, FileEntry]
    lock: threading.RLock

    def get_file(self, path: str) -> FileEntry | None:
        """The file at `path` (case-insensitive), or None."""
        with self.lock:
            return self.files.get(norm_path(path).lower())

    def put_file(self, entry: FileEntry) -> None:
        """Create or replace a file (its path is normalised)."""
        with self.lock:
            p = norm_path(entry.path)
            old = self.files.get(p.lower())
            # Windows keeps the spelling of an existing file's name when it is overwritten.
            self.files[p.lower()] = replace(entry, path=old.path if old else p)

    def delete_file(self, path: str) -> None:
        """Remove the file at `path` (no error when absent)."""
        with self.lock:
            self.files.pop(norm_path(path).lower(), None)

    def iter_files(self, directory: str) -> Iterator[FileEntry]:
        """Files directly in `directory`."""
        low = norm_path(directory).lower().rstrip("\\") + "\\"
        with self.lock:
            items = [e for k, e in self.files.items() if k.startswith(low) and "\\" not in k[len(low):]]
        yield from items

