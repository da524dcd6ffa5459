"""The host table on an 80-column terminal (a default tmux/ssh window): the values an operator
decides on (host, status, the product version the verdict rests on) are never broken across
lines: a WSUS DLL at `3.1.6001.65` folded into `3.1.6001.6` / `5` reads as another build."""

from __future__ import annotations

import re
from pathlib import Path

import pexpect

from tests.helpers import child_env, kbfix_argv
from winlab.fixtures import demo_site
from winlab.lab import Lab

HOSTS = ["WSUS-SP1", "WSUS-RTM", "CM07-SITE", "HEALTHY-CL02", "OFFICE-CL01", "WSUS-DOWN", "WSUS-LOCKED"]


def test_host_table_keeps_host_status_and_version_whole_at_80_columns(tmp_path: Path) -> None:
    with Lab([h for h in demo_site() if h.name in HOSTS]) as lab:
        inv = lab.write_inventory(tmp_path / "inventory.yaml")
        exe, *_ = kbfix_argv()
        child = pexpect.spawn(exe, ["-i", str(inv), "--state", str(tmp_path / "state"), "--no-color", "check"],
                              cwd=str(tmp_path), env=child_env(TERM="xterm", COLUMNS="80", LINES="50"),
                              encoding="utf-8", timeout=60, dimensions=(50, 80))
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    out = re.sub(r"\x1b\[[0-9;]*m", "", child.before.replace("\r", ""))  # bold headers (not colour)
    table = "\n".join(line for line in out[out.index("┏"):].splitlines() if line[:1] in "┏┃┡│└")
    assert max(len(line) for line in table.splitlines()) <= 80, table
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    names = [c.strip() for c in header.strip("┃").split("┃")]
    rows = [dict(zip(names, (c.strip() for c in line.strip("│").split("│")), strict=True))
            for line in table.splitlines() if line.startswith("│")]
    hosts = {r["Host"] for r in rows if r["Host"]}
    statuses = {r["Status"] for r in rows if r["Status"]}
    versions = {r["Version"] for r in rows if r["Version"]}
    assert hosts == set(HOSTS), table
    assert statuses == {"non_compliant", "not_applicable", "unreachable", "failed"}, table
    assert sum(len(r["Evidence"]) for r in rows) > 200, table  # the evidence still has room to be read
    assert versions == {"3.1.6001.65", "3.0.6000.374", "4.00.6221.1000"}, table
    assert all(re.fullmatch(r"\d+(\.\d+){2,3}", v) for v in versions), table
