"""`--limit` with an unknown name suggests close matches only, never the implicit groups unless
the word is very close to them (QA: `groups` read "did you mean 'ungrouped'?")."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inventory.errors import did_you_mean
from kbfix.cli import app
from winlab.fixtures import demo_site
from winlab.lab import Lab


@pytest.mark.parametrize(("limit", "suggested"), [
    ("groups", None),              # was "did you mean 'ungrouped'?"
    ("wsus_grouped", None),        # was "did you mean 'ungrouped'?"
    ("WSUS-SP2", "WSUS-SP1"),      # a typo of a host: still offered
    ("wsus-sp1x", "WSUS-SP1"),     # case does not matter; the name is shown as spelt
    ("ungroup", "ungrouped"),      # very close to an implicit group: offered
])
def test_unknown_limit_suggests_only_close_matches(tmp_path: Path, limit: str, suggested: str | None) -> None:
    with Lab([h for h in demo_site() if h.name in ("WSUS-SP1", "OFFICE-CL01")]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        r = CliRunner().invoke(app, ["-i", str(inv), "--state", str(tmp_path / "state"), "--limit", limit, "check"])
    assert r.exit_code == 2, r.output
    assert f"pattern {limit!r} matches no host or group" in r.output, r.output
    if suggested is None:
        assert "did you mean" not in r.output, r.output
    else:
        assert f"did you mean {suggested!r}?" in r.output, r.output
    assert lab.records("WSUS-SP1").total_requests == 0  # nothing was contacted


def test_did_you_mean_needs_a_close_match() -> None:
    assert did_you_mean("groups", ["all", "ungrouped", "wsus_servers"]) == ""
    assert did_you_mean("wsus_server", ["all", "ungrouped", "wsus_servers"]) == " (did you mean 'wsus_servers'?)"
    assert did_you_mean("x", []) == ""
