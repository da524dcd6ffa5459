"""Hostile emulated hosts (issue 20, findings 3, 4 and 12): a host that floods stderr and never
finishes, one that answers with type-confused JSON, one that plants terminal escape sequences.
Every test goes through the lab over HTTP with the real pywinrm-based client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from remoting.agent_protocol import op
from remoting.endpoint import Timeouts
from remoting.errors import CommandTimeoutError
from remoting.session import STDERR_KEEP, AgentSession
from tests.test_remoting_support import endpoint_for, make_hosts
from winlab.lab import Lab


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
