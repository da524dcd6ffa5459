"""`kbfix lab up`: help text, and a real run in a subprocess (serve, inventory, SIGTERM, summary)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kbfix.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_lab_up_help_teaches_with_an_example() -> None:
    result = CliRunner().invoke(app, ["lab", "up", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for text in ("--fixtures", "--hosts", "--https", "--transport", "--inventory-out", "kbfix lab up --https"):
        assert text in result.output


def test_lab_up_serves_writes_inventory_and_prints_summary_on_sigterm(tmp_path: Path) -> None:
    from winlab import fixtures

    if not fixtures.DEMO_SITE.is_file():
        pytest.skip("the demo site fixture is not shipped yet")
    from winrm.protocol import Protocol

    inventory = tmp_path / "inv.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kbfix.cli import app; app()", "lab", "up", "--hosts", "3",
         "--transport", "basic", "--inventory-out", str(inventory)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 30
        while not inventory.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert inventory.exists(), proc.stderr.read() if proc.poll() is not None and proc.stderr else "no inventory"
        doc = yaml.safe_load(inventory.read_text())
        assert doc["kbfix_inventory"] == 1 and len(doc["hosts"]) == 3
        name, entry = next(iter(doc["hosts"].items()))
        d = doc["defaults"]
        p = Protocol(f"http://{entry['address']}:{entry['port']}/wsman", transport="basic",
                     username=entry.get("username", d["username"]), password=entry.get("password", d["password"]),
                     read_timeout_sec=30, operation_timeout_sec=20)
        p.close_shell(p.open_shell())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "TOTAL" in out and name in out
