"""Progress output: plain line-per-host (not a TTY / -q) and rich bars with counts on a terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from kbfix.progress import PlainProgress, RichProgress, make_progress
from playbooks.model import Finding, HostError, HostResult, Status


def _results() -> list[HostResult]:
    ok = HostResult.from_findings("wsus01", [Finding(advisory="KB954960", status=Status.REMEDIATED, reason="r")])
    down = HostResult(host="wsus[02]", status=Status.UNREACHABLE, error=HostError(kind="unreachable", message="refused"))
    return [ok, down]


def test_plain_progress_is_one_line_per_host() -> None:
    out = io.StringIO()
    p = PlainProgress(out)
    p.start("apply", 2, 1)
    p.batch(0, 2)
    for r in _results():
        p.host_done(r)
    p.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "apply: 2 host(s) in 1 batch(es)"
    assert lines[2] == "wsus01\tremediated\tKB954960: remediated"
    assert lines[3] == "wsus[02]\tunreachable\tunreachable: refused"
    assert lines[-1] == "done: remediated 1 · unreachable 1"
    quiet = io.StringIO()
    q = PlainProgress(quiet, quiet=True)
    q.start("check", 1, 1)
    q.host_done(_results()[0])
    q.stop()
    assert quiet.getvalue() == ""  # -q: the command prints its one summary line, progress nothing


def test_hosts_a_stop_left_unstarted_are_not_counted_into_the_batch() -> None:
    """Issue 14: `batch 2/3 … 49/5` after a max-fail stop. The scheduler reports the hosts of the
    batches it never started after the last batch that ran; neither display counts them into it."""
    ok, down = _results()
    skipped = [HostResult(host=f"h{i}", status=Status.SKIPPED) for i in range(7)]
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, no_color=True)
    p = RichProgress(console)
    p.start("apply", 9, 2)
    p.batch(0, 2)
    p.host_done(ok)
    p.host_done(down)
    for r in skipped:
        p.host_done(r)
    p.stop()
    counters = re.findall(r"batch \d+/\d+\D*?(\d+)/(\d+)", buf.getvalue())
    assert counters and ("2", "2") in counters, buf.getvalue()
    for done, size in counters:
        assert int(done) <= int(size), buf.getvalue()
    assert "9/9" in buf.getvalue()  # the overall bar counts every host
    out = io.StringIO()
    plain = PlainProgress(out)
    plain.start("apply", 9, 2)
    plain.batch(0, 2)
    for r in [ok, down, *skipped]:
        plain.host_done(r)
    lines = out.getvalue().splitlines()
    assert lines[2:4] == ["wsus01\tremediated\tKB954960: remediated", "wsus[02]\tunreachable\tunreachable: refused"]
    assert lines[4].startswith("not started") and lines[5].startswith("h0\tskipped")


def test_rich_progress_counts_by_status_and_escapes_markup() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, no_color=True)
    p = RichProgress(console)
    p.start("apply", 2, 2)
    p.batch(0, 1)
    p.host_done(_results()[0])
    p.batch(1, 1)
    p.host_done(_results()[1])
    p.stop()
    text = buf.getvalue()
    assert "wsus[02]" in text  # not eaten as markup
    assert "remediated 1 · unreachable 1" in text
    assert "batch 2/2" in text


def test_make_progress_plain_when_not_a_tty() -> None:
    assert isinstance(make_progress(stream=io.StringIO()), PlainProgress)
