"""Playbooks: the engine (gather → assess → plan → apply → verify) and one YAML playbook per
advisory (KB954960, KB954474). The public API is re-exported from `playbooks.engine`."""

from __future__ import annotations

from playbooks.engine import *  # noqa: F403  (the engine's __all__ is the public API)
from playbooks.engine import __all__ as _engine_all

__all__ = list(_engine_all)
