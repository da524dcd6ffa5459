"""Hostile emulated hosts (issue 20, findings 3, 4 and 12): a host that floods stderr and never
finishes, one that answers with type-confused JSON, one that plants terminal escape sequences.
Every test goes through the lab over HTTP with the real pywinrm-based client."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remoting.agent_protocol import op
from remoting.endpoint import Timeouts
from remoting.errors import CommandTimeoutError
from remoting.session import STDERR_KEEP, AgentSession
from tests.test_remoting_support import endpoint_for, make_hosts
from winlab.fixtures import demo_site
from winlab.lab import Lab

KBFIX = Path(sys.executable).with_name("kbfix")


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """Samples RSS every 20 ms in a thread; `growth` = peak - the value at start (bytes)."""

    def __enter__(self) -> _PeakRss:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_stderr_flood_is_bounded_in_memory_and_stopped_at_the_deadline() -> None:
    """Finding 3: a host answering every Receive with stderr and never Done. Before the fix the
    session kept every chunk (RSS grew with the bytes received); now it keeps the last 64 KiB."""
    deadline_s = 4.0
    with Lab(make_hosts(extra="    faults: {stderr_flood: true}")) as lab:
        ep = endpoint_for(lab, "WSUS01", timeouts=Timeouts(connect=2.0, operation=3.0, read=6.0, command=deadline_s))
        with AgentSession(ep) as s, _PeakRss() as rss:
            started = time.monotonic()
            with pytest.raises(CommandTimeoutError):
                s.run([op("e", "env.expand", text="%windir%")])
            took = time.monotonic() - started
        assert lab.records("WSUS01").faults_injected["stderr_flood"] > 10
        assert lab.open_shells() == 0  # the command was signalled and the shell deleted
    received = s.stats.bytes_received
    assert received > 60 * 1024 * 1024, f"the flood was too small to measure ({received} bytes)"
    assert took < deadline_s + 5
    # Base64 in the envelope costs 4/3 of the stderr carried: the stderr itself was > 75 MB.
    assert rss.growth < 40 * 1024 * 1024, f"RSS grew {rss.growth / 1e6:.1f} MB for {received / 1e6:.0f} MB received"
    print(f"flood: {received / 1e6:.0f} MB received in {took:.1f} s, RSS growth {rss.growth / 1e6:.1f} MB")
    assert STDERR_KEEP == 64 * 1024


# ------------------------------------------------------------------ through the CLI, captured terminal

def _kbfix(inv: Path, state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `kbfix` script as an operator would; stdout/stderr captured as bytes."""
    return subprocess.run([str(KBFIX), "-i", str(inv), "--state", str(state), *args],
                          capture_output=True, timeout=timeout, check=False)


def test_escape_sequences_from_a_host_never_reach_the_terminal(tmp_path: Path) -> None:
    """Finding 4: computer name, OS and culture carrying an OSC title change, a screen clear, an
    OSC 8 link, a CR/LF-forged line and Rich markup. ping, check (table and progress lines) and
    the HTML report show them as visible escapes; no ESC/BEL/CR byte reaches the output."""
    with Lab(make_hosts(extra="    faults: {escape_names: true}")) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        ping = _kbfix(inv, tmp_path / "state", "ping")
        check = _kbfix(inv, tmp_path / "state", "check", "--report", str(tmp_path / "r.html"))
        assert lab.records("WSUS01").faults_injected["escape_names"] >= 2
    for out in (ping.stdout, ping.stderr, check.stdout, check.stderr):
        assert b"\x1b" not in out and b"\x07" not in out and b"\r" not in out
    assert ping.returncode == 0
    assert b"WSUS01\\x1b]0;pwned-title\\x07" in ping.stdout  # shown, not acted on
    assert b"\nwsus99\tok" not in ping.stdout  # the forged line stays inside its own line
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "\x1b" not in html and "\u241b]0;pwned-title" in html


def test_type_confused_answers_fail_that_host_only_with_a_protocol_error(tmp_path: Path) -> None:
    """Finding 12: well-framed answers with every value in the wrong JSON type. Before: exit 1
    "internal error: AttributeError"; now the host is failed (exit 4) with kind `protocol`."""
    hosts = make_hosts("WSUS01", extra="    faults: {type_confused: true}") + make_hosts("WSUS02")
    with Lab(hosts) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        check = _kbfix(inv, tmp_path / "state", "check")
        assert lab.records("WSUS01").faults_injected["type_confused"] == 1
    assert check.returncode == 4, check.stderr
    lines = check.stderr.decode().splitlines()
    bad = next(ln for ln in lines if ln.startswith("WSUS01\t"))
    good = next(ln for ln in lines if ln.startswith("WSUS02\t"))
    assert "\tfailed\tprotocol: " in bad and "protocol error from host" in bad and "internal" not in bad
    assert "\tfailed\t" not in good


def test_plan_review_shows_bracketed_package_text(tmp_path: Path) -> None:
    """Finding 10: `[file sha256 …]` was read as Rich markup and vanished for lowercase names."""
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    data = b"stand-in package\n"
    (pkgs / "wsus3.0sp1-kb954960-x64.exe").write_bytes(data)
    (pkgs / "manifest.yaml").write_text(
        "packages:\n  - kb: KB954960\n    file: wsus3.0sp1-kb954960-x64.exe\n"
        f"    sha256: {hashlib.sha256(data).hexdigest()}\n    args: ['/quiet', '/norestart']\n", encoding="utf-8")
    with Lab(demo_site()) as lab:
        inv = lab.write_inventory(tmp_path / "inv.yaml")
        plan = _kbfix(inv, tmp_path / "state", "--limit", "WSUS-SP1", "plan", "--packages", str(pkgs),
                      "-o", str(tmp_path / "plan.json"))
    assert plan.returncode == 3, plan.stderr
    assert b"[wsus3.0sp1-kb954960-x64.exe sha256 " in plan.stdout, plan.stdout


def _hoarding_host(values: int, chars: int) -> str:
    """A WSUS host whose Setup key carries `values` extra REG_SZ values of `chars` characters each
    (registry.values returns every value of the key: the facts grow with them)."""
    junk = "".join(f"        Junk{i:04d}: '{'x' * chars}'\n" for i in range(values))
    return (
        "hosts:\n  - name: HOARD01\n    os: {version: 5.2.3790, arch: x64, culture: en-US}\n"
        "    accounts: {Administrator: 'Pa55w0rd!'}\n"
        "    registry:\n      'HKLM\\SOFTWARE\\Microsoft\\Update Services\\Server\\Setup':\n"
        "        TargetDir: 'C:\\Program Files\\Update Services\\'\n        VersionString: '3.1.6001.1'\n" + junk
    )


def _store_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.iterdir() if p.name.startswith("audit.sqlite3"))


def test_a_host_cannot_fill_the_store(tmp_path: Path) -> None:
    """Finding 6: 15 MiB of facts per answer added 36.8 MB per check of one host. Strings are cut
    at 8 KiB and one host adds at most its budget (4 MiB) per run; the verdict is still stored."""
    from inventory import load_inventory
    from kbfix.engine import PlaybookEngine
    from kbfix.runner import RunOptions, run_check
    from kbfix.store import AuditStore
    from winlab.fixtures import load_host_fixture_text

    hosts = load_host_fixture_text(_hoarding_host(values=400, chars=12_000), "hoard.yaml")
    state = tmp_path / "state"
    with Lab(hosts) as lab, AuditStore.in_dir(state) as store:
        inv = load_inventory([lab.write_inventory(tmp_path / "inv.yaml")]).select(None)
        before = _store_bytes(state)
        out = run_check(inv, PlaybookEngine(), store, RunOptions())
        grew = _store_bytes(state) - before
        facts = store.facts(out.info.id, "HOARD01")
    assert out.results[0].status.value != "failed", out.results[0]
    assert grew < 4.5e6, f"store grew {grew / 1e6:.1f} MB"  # before: every byte, ~8.4 MB and more
    assert facts and "not stored" in json.dumps(facts)
    print(f"hoarding host: store grew {grew / 1e6:.2f} MB for ~{400 * 12_000 / 1e6:.1f} MB of registry text")
