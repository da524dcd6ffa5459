"""Shared test fixtures: paths to the shipped data and the third-party samples in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

# Property tests judge what a function returns, not how fast its inputs are drawn: on a loaded
# 2-core CI machine one draw of a recursive JSON strategy took 2.2 s and failed Hypothesis's
# too_slow health check (and its 200 ms deadline is the same kind of wall-clock flake). Loaded
# here, before any test module is imported, so it is every test's default; a test's own
# @settings still sets what it names.
settings.register_profile("kbfix", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kbfix")


def find_realdata() -> Path | None:
    """`$KBFIX_REALDATA`, else the first `shared/realdata` beside the project or beside one of
    its parent folders (a git worktree lives deeper than the main checkout), else None."""
    if os.environ.get("KBFIX_REALDATA"):
        return Path(os.environ["KBFIX_REALDATA"])
    return next((p / "shared" / "realdata" for p in REPO.parents if (p / "shared" / "realdata").is_dir()), None)


REALDATA = find_realdata()


@pytest.fixture
def realdata() -> Path:
    """The folder of real third-party log and WinRM samples (see ../shared/realdata/SOURCES.md).
    Missing: the test FAILS (these samples are part of the evidence, not optional)."""
    if REALDATA is None or not REALDATA.is_dir():
        pytest.fail("the real samples are missing: put ../shared/realdata (see its SOURCES.md) beside the project "
                    "or set KBFIX_REALDATA to the folder", pytrace=False)
    return REALDATA
