"""The playbook file format: pydantic models of one advisory's YAML, and the loader.

A playbook is data (one `playbook.yaml` per advisory folder, or any `*.yaml` in an extra
directory). Shapes (all conditions are sandboxed Jinja2 expressions, see `conditions.py`):

    id, title, severity, summary, sources: [{id, title, url, note}]
    applies_to: [role, ...]               # roles that make the advisory relevant (documentation + gate)
    probes: [Probe]                       # facts to gather (merged with the shared role probes)
    derive: {name: expression}            # derived facts, evaluated in order
    rules: [Rule]                         # first rule whose `when` holds decides the status
    remedies: {variant: Remedy}           # what plan() turns into exact agent ops
    verify: Verify                        # how verify() words failures and follow-ups

The shared role discovery (`playbooks/roles.yaml`) has the same `probes` plus `roles: {name: Role}`.
Loading errors raise `PlaybookError` naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inventory.safeyaml import YamlLimitError, safe_load
from playbooks.conditions import ConditionError, compile_check, template_check
from playbooks.logformats import FORMATS
from playbooks.model import Status

ROLES_FILE = Path(__file__).with_name("roles.yaml")


class PlaybookError(ValueError):
    """A playbook or roles file that cannot be loaded: message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where a fact comes from: an id used by `source:` fields, a title, a URL, a caveat."""

    id: str
    title: str
    url: str | None = None
    note: str | None = None


class Signature(_Strict):
    """One log signature: a regex (case-insensitive; the subset common to .NET and Python `re`).

    kind `token` anchors on language-independent text (method names, exception types, HRESULTs,
    STATMSG ids); kind `localized` is a translated message, only ever extra evidence."""

    id: str
    pattern: str
    kind: Literal["token", "localized"] = "token"
    lang: str | None = None
    source: str | None = None
    note: str | None = None


class Probe(_Strict):
    """A fact to gather. kinds and their agent ops:

    registry → registry.values (`key`, both views; fact: {exists, view, path, data});
    file → file.info per candidate in `paths` (fact: first existing {exists, path, version, ...});
    log → log.scan per candidate in `paths` with `signatures` (fact: {exists, files, hits, lines});
    products → products.list `pattern`, optionally filtered by `code_suffix`/`name_regex`
    (fact: {products, matched}); patches → products.patches `pattern` (Windows Installer patch
    registrations, fact: {patches, matched (State 1 applied only)}); wsus_update → wsus.find_update `title` (fact: {available, found, updates, entry});
    service → service.status `names`.
    """

    id: str
    kind: Literal["registry", "file", "log", "products", "patches", "wsus_update", "service"]
    key: str | None = None
    paths: list[str] = Field(default_factory=list)
    pattern: str | None = None
    code_suffix: str | None = None
    name_regex: str | None = None
    title: str | None = None
    names: list[str] = Field(default_factory=list)
    signatures: list[Signature] = Field(default_factory=list)
    log_format: str = "none"
    rotated: bool = False
    tail_bytes: int | None = None
    max_matches: int = 20
    context: int = 0
    source: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Probe:
        need = {"registry": "key", "products": "pattern", "patches": "pattern", "wsus_update": "title"}
        field = need.get(self.kind)
        if field and not getattr(self, field):
            raise ValueError(f"probe {self.id!r} of kind {self.kind} needs `{field}`")
        if self.kind in ("file", "log") and not self.paths:
            raise ValueError(f"probe {self.id!r} of kind {self.kind} needs `paths`")
        if self.kind == "log" and not self.signatures:
            raise ValueError(f"log probe {self.id!r} needs `signatures`")
        if self.kind == "service" and not self.names:
            raise ValueError(f"service probe {self.id!r} needs `names`")
        if self.log_format not in FORMATS:
            raise ValueError(f"probe {self.id!r}: log_format must be one of {FORMATS}")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that define what is gathered (two playbooks sharing an id must agree)."""
        return self.model_dump(exclude={"source", "note"})


class EvidenceRef(_Strict):
    """A fact to attach as evidence: the probe id, an optional expression for the value shown,
    and the signatures whose lines to attach (default all)."""

    fact: str
    value: str | None = None
    signatures: list[str] | None = None
    note: str | None = None


class Rule(_Strict):
    """One decision: when `when` holds, the finding gets `status`, `reason` (a template),
    `variant` (which remedy) and the listed evidence."""

    id: str
    when: str
    status: Status
    reason: str
    variant: str | None = None
    evidence: list[EvidenceRef] = Field(default_factory=list)
    source: str | None = None
    note: str | None = None


class Action(_Strict):
    """One remedy step. kind `install_package`: run the operator's package for `kb` whose
    manifest `fits` the version in expression `fits_version` (default args from `args`);
    kind `wsus_workaround`: on the WSUS server, for the update of fact `update_fact`, run
    `steps` (each `decline` or `approve`; `decline_if_needed` skips when already declined)."""

    kind: Literal["install_package", "wsus_workaround"]
    description: str
    kb: str | None = None
    fits_version: str | None = None
    args: list[str] = Field(default_factory=list)
    upload_dir: str = "%windir%\\Temp"
    estimated_seconds: float = 60.0
    update_fact: str | None = None
    steps: list[Literal["decline_if_needed", "decline", "approve"]] = Field(default_factory=list)
    approve_action: str = "Install"
    approve_group: str = "All Computers"
    source: str | None = None
    note: str | None = None


class Remedy(_Strict):
    """The remedy for one variant: summary text, its actions, reversibility and notes."""

    summary: str
    actions: list[Action] = Field(default_factory=list)
    reversible: bool = True
    note: str | None = None
    recommend: str | None = None
    source: str | None = None


class FollowUp(_Strict):
    """After a successful install: look in log probe `fact` for `signature` lines timestamped
    after the install; `found`/`missing` are the notes used for either outcome."""

    fact: str
    signatures: list[str]
    found: str
    missing: str


class Verify(_Strict):
    """Wording for verify(): `unfixed_after_success` when the installer succeeded but the rules
    still say non_compliant (names the known cause), optional follow-up log check."""

    unfixed_after_success: str = "the installer reported success but the host still matches the advisory"
    followup: FollowUp | None = None


class Role(_Strict):
    """A role discovered from facts when the inventory does not declare it."""

    when: str
    description: str
    source: str | None = None
    note: str | None = None


class RolesFile(_Strict):
    """The shared role discovery file: probes and roles."""

    probes: list[Probe]
    roles: dict[str, Role]
    sources: list[Source] = Field(default_factory=list)


class Playbook(_Strict):
    """One advisory, as loaded from YAML (see the module docstring for the shape)."""

    id: str
    title: str
    severity: Literal["low", "medium", "high", "critical"]
    summary: str
    sources: list[Source]
    applies_to: list[str] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    derive: dict[str, str] = Field(default_factory=dict)
    rules: list[Rule]
    remedies: dict[str, Remedy] = Field(default_factory=dict)
    verify: Verify = Field(default_factory=Verify)
    path: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        for r in self.rules:
            templated = r.variant is not None and "{{" in r.variant  # rendered per host by assess
            if r.status == Status.NON_COMPLIANT and r.variant and not templated and r.variant not in self.remedies:
                raise ValueError(f"rule {r.id!r} names variant {r.variant!r} with no remedy")
        return self


def _compile_all(exprs: list[tuple[str, str]], where: Path,
                 check: Callable[[str], None] = compile_check) -> None:
    for field, expr in exprs:
        try:
            check(expr)
        except ConditionError as exc:
            raise PlaybookError(f"{where}: field {field}: {exc}") from exc


def _read_yaml(path: Path) -> Any:
    try:
        return safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, YamlLimitError) as exc:
        raise PlaybookError(f"{path}: cannot read YAML: {exc}") from exc


def _validation_message(path: Path, exc: ValidationError) -> str:
    errs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return f"{path}: {errs}"


def load_playbook_file(path: Path) -> Playbook:
    """Load and check one playbook YAML file. Raises PlaybookError naming file and field."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise PlaybookError(f"{path}: a playbook is a mapping")
    try:
        pb = Playbook.model_validate({**raw, "path": str(path)})
    except ValidationError as exc:
        raise PlaybookError(_validation_message(path, exc)) from exc
    exprs = [(f"derive.{k}", v) for k, v in pb.derive.items()]
    exprs += [(f"rules.{r.id}.when", r.when) for r in pb.rules]
    exprs += [(f"rules.{r.id}.evidence.value", e.value) for r in pb.rules for e in r.evidence if e.value]
    exprs += [
        (f"remedies.{k}.fits_version", a.fits_version) for k, rem in pb.remedies.items() for a in rem.actions if a.fits_version
    ]
    _compile_all(exprs, path)
    texts = [(f"rules.{r.id}.reason", r.reason) for r in pb.rules]
    texts += [(f"rules.{r.id}.variant", r.variant) for r in pb.rules if r.variant]
    _compile_all(texts, path, check=template_check)
    return pb


def load_roles_file(path: Path = ROLES_FILE) -> RolesFile:
    """Load the shared role discovery file. Raises PlaybookError naming file and field."""
    raw = _read_yaml(path)
    try:
        rf = RolesFile.model_validate(raw)
    except ValidationError as exc:
        raise PlaybookError(_validation_message(path, exc)) from exc
    _compile_all([(f"roles.{k}.when", r.when) for k, r in rf.roles.items()], path)
    return rf
