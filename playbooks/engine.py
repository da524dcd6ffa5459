"""The playbook engine's public API in one place: gather → assess → plan → apply → verify.

Import from here (or from `playbooks`): the implementation lives in `assess.py` (loading,
gather ops, assessment, client linking), `planner.py` (plan), `runner.py` (apply, verify),
`packages.py` (operator package manifest) and `spec.py` (the playbook YAML format).
"""

from __future__ import annotations

from playbooks.assess import (
    Assessment,
    HostContext,
    advisory_meta,
    assess,
    gather_ops,
    link_clients,
    load_playbooks,
)
from playbooks.hierarchy import upstream_waves
from playbooks.packages import ManifestError, Package, PackageCatalog, load_packages
from playbooks.planner import plan
from playbooks.runner import Journal, apply, merge_verification, verify
from playbooks.spec import Playbook, PlaybookError

__all__ = [
    "Assessment",
    "HostContext",
    "Journal",
    "ManifestError",
    "Package",
    "PackageCatalog",
    "Playbook",
    "PlaybookError",
    "advisory_meta",
    "apply",
    "assess",
    "gather_ops",
    "link_clients",
    "load_packages",
    "load_playbooks",
    "merge_verification",
    "plan",
    "upstream_waves",
    "verify",
]
