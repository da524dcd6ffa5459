"""Playbooks: gather → assess → plan → execute → verify, and one YAML playbook per advisory
(KB954960, KB954474). This file is the public API; the implementation lives in `assess.py`
(loading, gather ops, assessment, client linking), `planner.py` (plan), `execute.py` (run the
planned actions, verify), `packages.py` (operator package manifest) and `spec.py` (the playbook
YAML format). Every step passes one value per host: `playbooks.model.HostResult`."""

from __future__ import annotations

from playbooks.assess import HostContext, advisory_meta, assess, gather_ops, link_clients, load_playbooks
from playbooks.execute import Journal, apply, merge_verification, verify
from playbooks.hierarchy import upstream_waves
from playbooks.model import HostResult
from playbooks.packages import ManifestError, Package, PackageCatalog, load_packages
from playbooks.planner import plan
from playbooks.spec import Playbook, PlaybookError

__all__ = [
    "HostContext",
    "HostResult",
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
