"""Shared test fixtures: paths to the shipped data and the third-party samples in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture
def realdata() -> Path:
    """The folder of real third-party log and WinRM samples (see ../shared/realdata/SOURCES.md)."""
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not beside the project")
    return REALDATA
