"""Waivers: accepted risks, in the manner of Chef InSpec waiver files.

A waiver file is YAML (at most WAIVER_FILE_MAX bytes, nesting at most WAIVER_MAX_DEPTH, checked
by `inventory.safeyaml` first; anchors, aliases and non-standard tags refused, so no "billion
laughs"):

```yaml
waivers:
  - host: "wsus0*"              # fnmatch pattern on the inventory host name, case-insensitive
    advisory: KB954960          # exact advisory id
    justification: "Decommissioned in January; isolated VLAN"   # required
    approved_by: "CAB 2026-114, J. Jensen"                      # required
    expires: 2027-01-31         # required, a date: the waiver is void from 00:00 UTC that day
```

InSpec's waiver file keys the same facts by control id (`expiration_date`, `justification`, `run`;
docs.chef.io/inspec/waivers). kbfix adds the host pattern (one advisory is one control on many
hosts) and requires `approved_by` and `expires`: an approval nobody owns, or one that never
ends, is not evidence.

Applying a file to a report document (`WaiverFile.apply`) turns each finding whose status is
WAIVABLE and that an unexpired waiver matches into status `waived`, keeping the status it had
(`waiver.waived_status`) and the waiver's words; the first matching waiver in file order wins.
Expiry is judged at the run's start, so re-rendering an old run gives the same report. An
expired waiver is ignored and named in `warnings`. Operational faults (failed, unreachable,
unknown) are never waived: they are not a risk someone accepted, they are a run to repeat. A live
waiver that covers nothing while its host pattern names hosts the run could not assess (status
failed, unreachable or unknown) is named in `warnings` too: it is unused, not because the risk
went away, but because nobody looked.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

import yaml

from inventory.safeyaml import YamlLimitError, check_limits

WAIVER_FILE_MAX = 1 << 20
"""Largest waiver file read, bytes (1 MiB: thousands of waivers)."""

WAIVER_MAX_DEPTH = 10
"""Deepest nesting a waiver file needs is 3 (waivers → list → entry); deeper is refused before
anything is built (the composer is recursive: 5,000 `[` would overflow Python's stack)."""

WAIVABLE = frozenset({"non_compliant", "pending_reboot", "skipped"})
"""Finding statuses a waiver can cover: the advisory is known not to be fixed on the host."""

UNASSESSED = frozenset({"failed", "unreachable", "unknown"})
"""Host statuses with no verdict on the advisory: a waiver naming only such hosts is unused unseen."""

_FIELDS = ("host", "advisory", "justification", "approved_by", "expires")


class WaiverError(ValueError):
    """A waiver file cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Waiver:
    """One waiver: host pattern, advisory id, justification, approver, expiry date (void from
    00:00 UTC that day) and the 1-based line it starts on."""

    host: str
    advisory: str
    justification: str
    approved_by: str
    expires: date
    line: int

    def expired(self, at: datetime) -> bool:
        """True when the waiver is void at `at` (aware UTC or naive-as-UTC)."""
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        return at >= datetime.combine(self.expires, time(0, 0), tzinfo=timezone.utc)

    def matches(self, host: str, advisory: str) -> bool:
        """True when the host name matches the pattern (case-insensitive) and the advisory is the same."""
        return advisory == self.advisory and fnmatch.fnmatchcase(host.lower(), self.host.lower())


@dataclass
class WaiverFile:
    """The waivers of one file, its path and SHA-256 (hex) of its bytes; `warnings` collects the
    expired waivers met by `apply`, and the live ones left unused because their hosts were not
    assessed."""

    path: str
    sha256: str
    waivers: list[Waiver]
    warnings: list[str] = field(default_factory=list)

    def where(self, w: Waiver) -> str:
        """`file:line` of a waiver."""
        return f"{self.path}:{w.line}"

    def apply(self, hosts: Sequence[MutableMapping[str, Any]], at: datetime) -> dict[str, Any]:
        """Mark waived findings in the document's `hosts` (in place) as judged at `at` (the run's
        start); recompute each changed host's status (worst of its findings, document order).
        Returns the document's `waivers` section: file, sha256, evaluated_at, and per waiver its
        fields, `expired` and how many findings it `matched`. Expired waivers go to `warnings`, and
        so does a live waiver that matched nothing while hosts its pattern names were not assessed
        (status in `UNASSESSED`, with no assessed finding for its advisory)."""
        from kbfix.report.document import STATUSES, iso_utc

        rank = {s: i for i, s in enumerate(STATUSES)}
        used = [0] * len(self.waivers)
        live = [(i, w) for i, w in enumerate(self.waivers) if not w.expired(at)]
        self.warnings = [
            f"waiver {self.where(w)} (host {w.host}, {w.advisory}, approved by {w.approved_by}) expired on "
            f"{w.expires.isoformat()}; ignored"
            for w in self.waivers
            if w.expired(at)
        ]
        for host in hosts:
            changed = False
            for adv in host["advisories"]:
                if adv["status"] not in WAIVABLE:
                    continue
                hit = next(((i, w) for i, w in live if w.matches(host["name"], adv["id"])), None)
                if hit is None:
                    continue
                i, w = hit
                used[i] += 1
                adv["waiver"] = {
                    "justification": w.justification,
                    "approved_by": w.approved_by,
                    "expires": w.expires.isoformat(),
                    "source": self.where(w),
                    "waived_status": adv["status"],
                }
                adv["status"] = "waived"
                changed = True
            if changed:
                host["status"] = max((a["status"] for a in host["advisories"]), key=rank.__getitem__)
        for i, w in live:
            if used[i]:
                continue
            blind = [f"{h['name']} ({h['status']})" for h in hosts if _unassessed_for(h, w)]
            if blind:
                self.warnings.append(
                    f"waiver {self.where(w)} (host {w.host}, {w.advisory}, approved by {w.approved_by}) matched no "
                    f"finding: {', '.join(blind[:5])}{' and more' if len(blind) > 5 else ''} not assessed in this "
                    "run; it covers nothing until they are")
        return {
            "file": self.path,
            "sha256": self.sha256,
            "evaluated_at": iso_utc(at),
            "entries": [
                {
                    "host": w.host,
                    "advisory": w.advisory,
                    "justification": w.justification,
                    "approved_by": w.approved_by,
                    "expires": w.expires.isoformat(),
                    "source": self.where(w),
                    "expired": w.expired(at),
                    "matched": used[i],
                }
                for i, w in enumerate(self.waivers)
            ],
            "warnings": list(self.warnings),
        }


def _unassessed_for(host: Mapping[str, Any], w: Waiver) -> bool:
    """True when `w`'s pattern names the document host and the run has no verdict on `w.advisory`
    there (the host's status is in UNASSESSED and no advisory of it says otherwise)."""
    if not w.matches(str(host["name"]), w.advisory) or host["status"] not in UNASSESSED:
        return False
    return all(a["status"] in UNASSESSED for a in host["advisories"] if a["id"] == w.advisory)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (an alias bomb expands exponentially)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise WaiverError(f"{line}: YAML aliases are not allowed in a waiver file")
        if getattr(event, "anchor", None):
            raise WaiverError(f"{line}: YAML anchors are not allowed in a waiver file")
        return super().compose_node(parent, index)


def _scalar(node: yaml.Node, where: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag not in (
        "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp",
    ):
        raise WaiverError(f"{where}: expected text")
    return str(node.value).strip()


def _entry(node: yaml.Node, path: str) -> Waiver:
    line = node.start_mark.line + 1
    if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq"):
        raise WaiverError(f"{path}:{line}: YAML tag {node.tag!r} is not allowed in a waiver file")
    if not isinstance(node, yaml.MappingNode):
        raise WaiverError(f"{path}:{line}: a waiver is a mapping of {', '.join(_FIELDS)}")
    values: dict[str, tuple[str, int]] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        key = _scalar(key_node, f"{path}:{key_line}")
        if key not in _FIELDS:
            raise WaiverError(f"{path}:{key_line}: unknown field {key!r} (fields: {', '.join(_FIELDS)})")
        if key in values:
            raise WaiverError(f"{path}:{key_line}: field {key!r} given twice")
        values[key] = (_scalar(value_node, f"{path}:{key_line}: {key}"), key_line)
    for name in _FIELDS:
        if not values.get(name, ("", 0))[0]:
            raise WaiverError(f"{path}:{line}: field {name!r} is required and must not be empty")
    text, key_line = values["expires"]
    try:
        expires = date.fromisoformat(text[:10]) if len(text) >= 10 else date.fromisoformat(text)
    except ValueError:
        raise WaiverError(f"{path}:{key_line}: expires: {text!r} is not a date (YYYY-MM-DD)") from None
    return Waiver(
        host=values["host"][0],
        advisory=values["advisory"][0],
        justification=values["justification"][0],
        approved_by=values["approved_by"][0],
        expires=expires,
        line=line,
    )


def parse_waivers(data: bytes, path: str = "<waivers>") -> WaiverFile:
    """Parse waiver file bytes. Raises WaiverError naming `path`, the line and the field."""
    if len(data) > WAIVER_FILE_MAX:
        raise WaiverError(f"{path}: {len(data)} bytes; a waiver file may hold at most {WAIVER_FILE_MAX}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WaiverError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # inventory.safeyaml: kbfix's one guard for untrusted YAML (nesting, alias expansion),
        # in one linear scan before anything is composed; no alias may add a node here.
        check_limits(text, max_depth=WAIVER_MAX_DEPTH, max_alias_nodes=0)
        loader = _StrictLoader(text)
    except YamlLimitError as exc:
        raise WaiverError(f"{path}:{exc.line or 0}: {exc.message}") from None
    except yaml.YAMLError as exc:  # malformed, or control characters the reader refuses
        raise WaiverError(f"{path}: {exc}") from None
    try:
        root = loader.get_single_node()
    except WaiverError as exc:  # from _StrictLoader: "<line>: message"
        raise WaiverError(f"{path}:{exc}") from None
    except yaml.YAMLError as exc:
        raise WaiverError(f"{path}: {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        items: list[yaml.Node] = []
    else:
        if isinstance(root, yaml.MappingNode):
            keys = {_scalar(k, f"{path}:{k.start_mark.line + 1}"): v for k, v in root.value}
            if set(keys) != {"waivers"}:
                raise WaiverError(f"{path}:{root.start_mark.line + 1}: the top level holds one key, `waivers`")
            root = keys["waivers"]
        if not isinstance(root, yaml.SequenceNode):
            raise WaiverError(f"{path}:{root.start_mark.line + 1}: `waivers` must be a list")
        items = list(root.value)
    return WaiverFile(path=path, sha256=hashlib.sha256(data).hexdigest(), waivers=[_entry(n, path) for n in items])


def load_waivers(path: Path) -> WaiverFile:
    """Read and parse a waiver file. Raises WaiverError (unreadable, too large, malformed)."""
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(WAIVER_FILE_MAX + 1)
    except OSError as exc:
        raise WaiverError(f"{path}: cannot read the waiver file: {exc.strerror or exc}") from None
    return parse_waivers(data, str(path))


def waiver_counts(doc: Mapping[str, Any]) -> int:
    """How many findings of a document are waived."""
    return sum(1 for h in doc["hosts"] for a in h["advisories"] if a["status"] == "waived")


__all__ = ["WAIVABLE", "WAIVER_FILE_MAX", "Waiver", "WaiverError", "WaiverFile", "load_waivers", "parse_waivers"]
