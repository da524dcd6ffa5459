"""What the CLI prints for people: host tables, plan summaries, run history and one run.

Pure rendering onto a Rich `Console` (the CLI makes it, honouring --no-color); every value that
comes from a host, an inventory or the store goes through `kbfix.terminal.cell` (controls shown
as visible escapes, never read as Rich markup).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from kbfix.planfile import PlanDocument
from kbfix.progress import counts_text
from kbfix.runinfo import RunInfo
from kbfix.terminal import cell
from playbooks.model import HostResult, PlannedAction, Status


def finding_summary(r: HostResult) -> str:
    """`KB954960 sp1: 3.1.6001.65` per applicable finding; the error for a failed host."""
    if r.error is not None:
        return f"{r.error.kind.value}: {r.error.message}"
    parts = []
    for f in r.findings:
        if f.status is Status.NOT_APPLICABLE:
            continue
        head = f"{f.advisory} {f.variant}" if f.variant else f.advisory
        ev = next((e for e in f.evidence if e.value), None)
        if f.skip_reason:
            parts.append(f"{head}: skipped ({f.skip_reason.value})")
        elif ev is not None and ev.value is not None:
            value = ev.value if len(ev.value) <= 48 else ev.value[:47] + "…"
            parts.append(f"{head}: {value}")
        elif f.evidence and f.evidence[0].lines:
            parts.append(f"{head}: {len(f.evidence[0].lines)} log line(s)")
        else:
            parts.append(head)
    return "; ".join(parts) or "-"


_VERSION = re.compile(r"\b\d+\.\d+\.\d+(?:\.\d+)?\b")


def product_version(r: HostResult) -> str:
    """The first version number in the evidence of an applicable finding (the WSUS DLL or
    ConfigMgr build the verdict rests on), else empty."""
    for f in r.findings:
        if f.status is Status.NOT_APPLICABLE:
            continue
        for e in [*f.verification, *f.evidence]:
            m = _VERSION.search(e.value or "")
            if m:
                return m.group(0)
    return ""


#: Terminal width (columns) below which the host table leaves out Role and OS.
NARROW = 110


def print_table(console: Console, results: Sequence[HostResult], title: str) -> None:
    """One row per host (status, roles, product version, OS, evidence) and the status counts."""
    table = Table(title=title, show_lines=False)
    # Host, status and version are never folded: `3.1.6001.6` / `5` reads as another build than the
    # one the verdict rests on. Below NARROW columns (an 80-column tmux or ssh window) Role and OS
    # give way, so Evidence keeps room to be read (`kbfix show RUN` on a wider terminal has them).
    wide = console.width >= NARROW
    columns = ("Host", "Status", "Role", "Version", "OS", "Evidence") if wide else ("Host", "Status", "Version", "Evidence")
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col in ("Host", "Status", "Version"))
    for r in results:
        osv = str(r.os.get("os_version") or r.os.get("version") or "")
        row = {"Host": cell(r.host), "Status": r.status.value, "Role": cell(", ".join(r.roles)),
               "Version": cell(product_version(r)), "OS": cell(osv), "Evidence": cell(finding_summary(r))}
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    counts = Counter(r.status for r in results)
    console.print(counts_text(counts) or "no hosts")


def print_summary(console: Console, results: Sequence[HostResult], title: str) -> None:
    """The one line `-q` prints: `TITLE: N host(s): compliant 3 · failed 1` (counts by status)."""
    counts = Counter(r.status for r in results)
    console.print(cell(f"{title}: {len(results)} host(s): {counts_text(counts) or 'none'}"))


def why_nothing(host: HostResult) -> str:
    """Why the plan has no action for `host`, in words that group across hosts (no host names or
    addresses): its error kind when it could not be read, its status when there is nothing to
    fix, else the planner's note on the first non-compliant finding (a missing package, a replica
    server, an update missing from the catalog), or that the remedy belongs on a linked server."""
    if host.error is not None:
        kind = "" if host.error.kind == host.status.value else f" ({host.error.kind})"
        return f"{host.status.value} while planning{kind}: see `kbfix show RUN` for the error"
    if host.status is not Status.NON_COMPLIANT:
        return host.status.value
    for f in host.findings:
        if f.status is Status.NON_COMPLIANT and not f.planned:
            if f.linked_host:
                return f"{f.advisory}: a client; its remedy runs on its WSUS server, which this plan covers"
            if f.notes:
                return f"{f.advisory}: {f.notes[0]}"
            if not f.variant:
                return f"{f.advisory}: non-compliant, and no remedy applies to this variant"
    return "non-compliant, and kbfix has no remedy it may apply here"


def print_plan(console: Console, plan: PlanDocument) -> int:
    """Human summary of a plan: the actions per host, then the hosts with nothing to do grouped by
    why (`why_nothing`) with counts. Returns the number of actions."""
    total = 0
    idle: dict[str, list[str]] = {}
    for h in plan.hosts:
        n = len(h.planned)
        total += n
        if not n:
            idle.setdefault(why_nothing(h), []).append(h.host)
            continue
        console.print(cell(f"{h.host}: {n} action(s), about {h.estimated_seconds:g} s"))
        for f in h.findings:
            for p in f.planned:
                # Plain Text, never markup: `[file sha256 …]` used to be read as a Rich tag and vanish.
                pkg = f" [{p.package.file} sha256 {p.package.sha256[:12]}…]" if p.package else ""
                codes = f" exit codes {p.expected_exit_codes}" if p.expected_exit_codes else ""
                console.print(cell(f"  {p.advisory} {p.kind.value}: {p.description}{pkg}{codes}"))
            for note in f.notes:
                console.print(cell(f"  note: {note}"))
    if idle:
        console.print(f"nothing to do on {sum(len(v) for v in idle.values())} host(s):")
        for reason, hosts in sorted(idle.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            console.print(cell(f"  {len(hosts):>3}  {reason}"))
            console.print(cell(f"       {', '.join(hosts)}"))
    console.print(f"{total} action(s) on {sum(1 for h in plan.hosts if h.planned)} host(s)")
    return total


#: The state shown for a run without an end event whose process no longer exists.
GONE = "process gone, not ended"


def state_text(info: RunInfo, gone: bool) -> str:
    """A run's state as shown: `running` only while its process lives (AuditStore.run_is_live);
    a run left without an end event by SIGKILL, a lost session or a second Ctrl-C reads GONE."""
    return GONE if gone and info.state == "running" else info.state


def history_table(rows: Sequence[tuple[RunInfo, Counter[Status]]], title: str,
                  gone: frozenset[str] = frozenset()) -> Table:
    """Past runs: id, kind, state (GONE for the ids in `gone`), start, operator, host status counts."""
    table = Table(title=title)
    for col in ("Run", "Kind", "State", "Started (UTC)", "Operator", "Hosts"):
        table.add_column(col, overflow="fold")
    for r, c in rows:
        table.add_row(cell(r.id), r.kind, state_text(r, r.id in gone), f"{r.started:%Y-%m-%d %H:%M:%S}",
                      cell(r.operator), counts_text(c))
    return table


def print_run(
    console: Console,
    info: RunInfo,
    events: Sequence[Mapping[str, Any]],
    resumed_by: Sequence[str],
    results: Sequence[HostResult],
    planned: Sequence[tuple[str, PlannedAction, str | None]],
    intents: Sequence[Mapping[str, Any]],
    *,
    gone: bool = False,
) -> None:
    """One stored run: identity, options, events, host table, planned or executed actions.
    `gone`: the run has no end event and its process no longer exists (state_text)."""
    console.print(cell(f"run {info.id}  {info.kind}  {state_text(info, gone)}  by {info.operator}  kbfix {info.kbfix_version}"))
    if gone and info.state == "running":
        finish = f"`kbfix apply --resume {info.id}` finishes it" if info.kind == "apply" else "run it again"
        console.print(cell(f"its process is gone (killed, crashed or abandoned by a second Ctrl-C) and it never "
                           f"ended: {finish}"))
    if info.change_ticket or info.approved_by:  # evidence (issue 15)
        console.print(cell(f"change ticket {info.change_ticket or '-'}  approved by {info.approved_by or '-'}"))
    console.print(cell(f"started {info.started.isoformat()}  ended {info.ended.isoformat() if info.ended else '-'}"
                       f"  window {info.window or '-'}"))
    console.print(cell(f"options {json.dumps(info.options, sort_keys=True)}"))
    for e in events:
        console.print(cell(f"  {e['at']}  {e['state']}  {e['detail'] or ''}"))
    if resumed_by:
        console.print(f"resumed by {', '.join(resumed_by)}")
    print_table(console, results, "hosts")
    if planned and not intents:
        table = Table(title="planned actions")
        for col in ("Host", "Action", "Kind", "Description", "Estimate (s)"):
            table.add_column(col, overflow="fold")
        for host, a, _digest in planned:
            table.add_row(cell(host), cell(a.id), cell(a.kind.value), cell(a.description), f"{a.estimated_seconds:g}")
        console.print(table)
    if intents:
        table = Table(title="actions (intent → result)")
        for col in ("Host", "Action", "Kind", "Intent at", "Outcome", "Exit"):
            table.add_column(col, overflow="fold")
        for i in intents:
            table.add_row(cell(i["host"]), cell(i["action_id"]), cell(i["kind"]), cell(i["at"]), i["outcome"] or "NO RESULT",
                          "" if i["exit_code"] is None else str(i["exit_code"]))
        console.print(table)
