"""kbfix.gctune: a run raises the young-generation GC threshold, never lowers it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kbfix.gctune import FLEET_GEN0_THRESHOLD, tune_for_fleet


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_default_threshold_is_raised_and_older_generations_kept(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_for_fleet()
    assert gc.get_threshold() == (FLEET_GEN0_THRESHOLD, 10, 10)
    tune_for_fleet()
    assert gc.get_threshold() == (FLEET_GEN0_THRESHOLD, 10, 10)


@pytest.mark.parametrize("gen0", [0, 50_000], ids=["disabled", "already-higher"])
def test_a_chosen_setting_is_left_alone(thresholds: None, gen0: int) -> None:
    gc.set_threshold(gen0, 5, 5)
    tune_for_fleet()
    assert gc.get_threshold() == (gen0, 5, 5)
