"""--state / KBFIX_STATE as an operator types it: a mistyped store URL must stop the run (exit 2,
no host contacted, nothing written), never turn into a local folder named after the URL or into a
store in the server's maintenance database; a connection error reads as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbfix.cli import app
from winlab.fixtures import demo_site
from winlab.lab import Lab

BAD_URLS = [
    ("mysql://kbfix:Hunter2@db.example/audit", "postgresql://"),  # another database's URL
    ("postgresql:/127.0.0.1/kbfix", "postgresql://"),  # one slash short
    # no database: libpq would use the user's (`postgres`). Port 1: should the check be missing,
    # the test fails on a refused connection instead of writing into the server's own database.
    ("postgresql://postgres@127.0.0.1:1", "database"),
    ("postgresql://postgres:Hunter2@127.0.0.1:1/", "database"),
]


@pytest.mark.parametrize(("url", "needle"), BAD_URLS)
@pytest.mark.parametrize("how", ["option", "env"])
def test_mistyped_store_url_exits_2_before_any_host_is_contacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, needle: str, how: str) -> None:
    monkeypatch.chdir(tmp_path)  # a URL taken for a folder would be created here
    fixtures = [h for h in demo_site() if h.name == "WSUS-SP1"]
    with Lab(fixtures) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        args = ["-i", str(inv), "check"] + (["--state", url] if how == "option" else [])
        r = CliRunner().invoke(app, args, env={"KBFIX_STATE": url} if how == "env" else {})
        seen = sum(lab.records("WSUS-SP1").requests.values())
    assert r.exit_code == 2, r.output
    assert needle in r.output and "--state" in r.output, r.output
    assert "Hunter2" not in r.output  # a password typed into the URL is never echoed
    assert seen == 0  # stopped before any connection
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml"]  # no folder named after the URL


def test_unreachable_server_reads_as_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["history", "--state", "postgresql://postgres@127.0.0.1:1/kbfix"])
    assert r.exit_code == 2, r.output
    assert "127.0.0.1" in r.output and "\\n" not in r.output and "\\t" not in r.output, r.output
