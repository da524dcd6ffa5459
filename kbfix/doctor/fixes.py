"""The fix texts of kbfix/doctor/fixes.yaml, filled in per host and step."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

FIXES_PATH = Path(__file__).with_name("fixes.yaml")


@functools.lru_cache(maxsize=1)
def _fixes() -> dict[str, str]:
    data = yaml.safe_load(FIXES_PATH.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data["fixes"].items()}


def fix(name: str, **values: Any) -> str:
    """The fix `name` with `{field}`s filled. Raises KeyError for an unknown fix or a missing field."""
    return _fixes()[name].format(**values)


def names() -> list[str]:
    """Every fix name in the file."""
    return sorted(_fixes())
