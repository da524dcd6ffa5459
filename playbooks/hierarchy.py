"""WSUS hierarchy order: upstream servers before their replicas/downstream servers.

KB954960's RTM workaround changes update approvals, which replicas inherit from their upstream
server, so it is applied upstream first (as the WSUS MVPs citing KB954960 advise, blog.expta.com
Oct 2008). The WSUS Setup registry key does not name the upstream server (it lives in the WSUS
database), so the inventory declares it per host as the variable `wsus_upstream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from graphlib import CycleError, TopologicalSorter

from playbooks.assess import HostContext

UPSTREAM_VAR = "wsus_upstream"


def upstream_waves(contexts: Sequence[HostContext]) -> list[list[str]]:
    """Host names in waves: every host's upstream (when it is in the run) is in an earlier wave.
    Hosts without an upstream in the run form wave 0; names within a wave are sorted.
    Raises ValueError naming the hosts of an upstream cycle."""
    names = {c.name.lower(): c.name for c in contexts}
    graph: dict[str, set[str]] = {}
    for c in contexts:
        up = str(c.vars.get(UPSTREAM_VAR) or "").lower()
        graph[c.name] = {names[up]} if up in names and names[up] != c.name else set()
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError as exc:
        raise ValueError(f"WSUS upstream cycle between {', '.join(exc.args[1])}") from exc
    waves = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        waves.append(ready)
        sorter.done(*ready)
    return waves
