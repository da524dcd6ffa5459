"""Compliance reports: the `kbfix/report/v2` document and its renderings.

`build_document` turns a run and its host results into the JSON document (the source of truth,
validated against schema-v2.json); `render` / `write_report` present it as JSON, HTML, Markdown,
CSV or JUnit XML in one of LANGUAGES. The CLI and the run orchestration call only these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kbfix.report.document import (
    SCHEMA_ID,
    SCHEMA_VERSION,
    STATUSES,
    LastKnown,
    assemble,
    compliance_percent,
    redact,
)
from kbfix.report.i18n import LANGUAGES, UnknownLanguageError
from kbfix.report.render import (
    FORMATS,
    TEXT_FORMATS,
    UnknownFormatError,
    format_for_path,
    render,
    write_report,
)
from kbfix.report.schema import SCHEMA_PATH, ReportSchemaError, validate_document
from kbfix.runinfo import RunInfo
from kbfix.waivers import WaiverFile
from playbooks.model import HostResult

__all__ = [
    "FORMATS",
    "LANGUAGES",
    "SCHEMA_ID",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "STATUSES",
    "TEXT_FORMATS",
    "LastKnown",
    "ReportSchemaError",
    "UnknownFormatError",
    "UnknownLanguageError",
    "build_document",
    "compliance_percent",
    "format_for_path",
    "redact",
    "render",
    "validate_document",
    "write_report",
]


def build_document(
    run: RunInfo,
    results: Sequence[HostResult],
    advisories: Mapping[str, Mapping[str, Any]],
    *,
    generated: datetime | None = None,
    last_known: Mapping[str, LastKnown] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    waivers: WaiverFile | None = None,
) -> dict[str, Any]:
    """The validated report document of `run`.

    results: one HostResult per host (any order; the document sorts by host name).
    advisories: `{id: {"title", "sources": [url], "severity", "summary"}}` from the playbooks.
    generated: the document's time stamp, default the run's end (or start) so re-rendering a
    stored run is reproducible. last_known: host → its latest result from an earlier run (what a
    host this run skipped keeps: state, roles, OS); events: the run's store events (the early-stop
    banner quotes the max-fail note or interrupt reason); waivers: applied as of the run's start
    (their warnings are in the document's `waivers.warnings`). Raises ReportSchemaError if the result does not match the schema
    (a bug, or inputs the schema does not allow, such as an empty host name).
    """
    doc = assemble(run, results, advisories, generated=generated, last_known=last_known, events=events,
                   waivers=waivers)
    validate_document(doc)
    return doc
