"""Reports as evidence: build a run's document from the audit store, write report files with
their SHA-256 recorded in the store, and tell whether a file is a report kbfix wrote.

The store keeps, per report written, the run, format, language, absolute path, size and
SHA-256 of the exact bytes (a `reports` row, hash-chained like every audit row). `identify`
hashes a file and looks that hash up: a one-byte edit gives another hash, so an edited report
is no longer one kbfix wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbfix.report.document import LastKnown
from kbfix.report.render import format_for_path, render, write_bytes_atomic
from kbfix.runinfo import RunInfo
from kbfix.store import AuditStore
from kbfix.waivers import WaiverFile
from playbooks.model import HostResult


def document_for_run(
    store: AuditStore,
    info: RunInfo,
    results: Sequence[HostResult],
    advisories: Mapping[str, Mapping[str, Any]],
    *,
    waivers: WaiverFile | None = None,
) -> dict[str, Any]:
    """The validated report document of a stored run: its results, its store events (the early
    stop's detail) and, for hosts it skipped, their latest state from earlier runs."""
    from kbfix.report import build_document

    skipped = [r.host for r in results if r.status.value == "skipped" or any(f.skip_reason for f in r.findings)]
    last = {
        host: LastKnown(run_id=rid, at=at, result=res)
        for host, (rid, at, res) in (store.latest_states(skipped, before_run=info.id).items() if skipped else ())
    }
    return build_document(info, results, advisories, last_known=last, events=store.events(info.id), waivers=waivers)


def write_recorded(
    store: AuditStore, doc: Mapping[str, Any], path: Path, *, lang: str = "en", template_dirs: Sequence[Path] = ()
) -> str:
    """Render `doc` in the format of `path`'s extension, write it atomically and record its SHA-256
    (hex, returned) for the document's run. Raises what `render` raises, OSError, StoreError."""
    path = Path(path)
    fmt = format_for_path(path)
    data = render(doc, fmt, lang=lang, template_dirs=template_dirs)
    write_bytes_atomic(path, data)
    digest = hashlib.sha256(data).hexdigest()
    store.record_report(doc["run"]["id"], path, fmt, lang, digest, len(data))
    return digest


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks. Raises OSError."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ReportIdentity:
    """What the store says about a file: its SHA-256 and the report rows with that hash
    (run_id, format, lang, path, size, at), empty when kbfix never wrote these bytes."""

    sha256: str
    matches: list[dict[str, Any]]

    @property
    def known(self) -> bool:
        """True when the store recorded a report with exactly these bytes."""
        return bool(self.matches)


def identify(store: AuditStore, path: Path) -> ReportIdentity:
    """Hash `path` and look the hash up in the store's report rows. Raises OSError."""
    digest = file_sha256(path)
    return ReportIdentity(digest, store.reports_with_hash(digest))


__all__ = ["ReportIdentity", "document_for_run", "file_sha256", "identify", "write_recorded"]
