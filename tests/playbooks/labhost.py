"""A host for assess()/plan() unit tests, answered by the lab's agent emulator (no HTTP).

`LabHostSpec` describes a host in a few dicts (registry, files, logs, products, patches,
services, WSUS catalog) and `respond(ops)` builds an `EmulatedHost` from it and sends the ops
with `winlab.host.run_agent_request`: the same emulator the lab serves over WS-Man, so ANSI
handling, line cutting, rotation order, `${reg:…}` references and registry views are the
emulator's, not a second re-implementation (issue 12). `drop`/`errors` post-process the real
answer to model a lost result or a probe error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from remoting.agent_protocol import AgentRequest, AgentResponse, OpError, OpRequest, OpResult
from winlab.faults import Faults
from winlab.host import EmulatedHost, run_agent_request
from winlab.hoststate import BytesContent, FileEntry, HostState, OsInfo, PatchSpec, WsusUpdate
from winlab.templates import HostTemplate


@dataclass
class LabHostSpec:
    """registry: physical key → {name: value}; files: path → FileVersion; logs: path → bytes or
    str (str is stored as UTF-8); products: [{name, product_code, version, view}]; patches:
    [PatchSpec]; services: name → status; wsus_updates: [{id, title, declined, approvals,
    requires_license}]; os_version 6.0.6002 unless given."""

    arch: str = "x64"
    culture: str = "en-US"
    os_version: str = "6.0.6002"
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    logs: dict[str, bytes | str] = field(default_factory=dict)
    products: list[dict[str, Any]] = field(default_factory=list)
    patches: list[PatchSpec] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    wsus_api: bool = False
    wsus_replica: bool = False
    wsus_updates: list[dict[str, Any]] = field(default_factory=list)

    def host(self) -> EmulatedHost:
        """A fresh emulated host with this state."""
        state = HostState(computer_name="HOST", os=OsInfo(self.os_version, self.arch, self.culture))  # type: ignore[arg-type]
        for key, values in self.registry.items():
            state.ensure_key(key)
            for name, value in values.items():
                state.set_value(key, name, value)
        for path, version in self.files.items():
            state.put_file(FileEntry(path, version=version))
        for path, data in self.logs.items():
            state.put_file(FileEntry(path, BytesContent(data.encode("utf-8") if isinstance(data, str) else data)))
        for p in self.products:
            state.add_product(p["name"], p.get("version"), p.get("publisher"), p.get("product_code"), p.get("view"))
        for pa in self.patches:
            state.add_patch(pa)
        for name, status in self.services.items():
            state.set_service(name, status)
        state.wsus_api = self.wsus_api
        state.wsus_replica = self.wsus_replica
        state.wsus_updates = [WsusUpdate(u["id"], u["title"], u.get("declined", False), list(u.get("approvals", [])),
                                         u.get("requires_license", False)) for u in self.wsus_updates]
        template = HostTemplate(name="HOST", site=None, accounts={}, state=state, installers=(), faults=Faults(),
                                max_envelope_kb=500, max_shells_per_user=30, idle_timeout_s=7200.0, time_scale=0.0)
        return EmulatedHost(template)

    def respond(self, ops: Sequence[OpRequest], *, drop: Sequence[str] = (),
                errors: dict[str, OpError] | None = None) -> AgentResponse:
        """The emulator's response to `ops`; `drop` omits op ids, `errors` replaces an op's result."""
        result, resp = run_agent_request(self.host(), AgentRequest(tuple(ops)))
        assert resp is not None, result.stderr
        out: list[OpResult] = []
        for r in resp.results:
            if r.id in drop:
                continue
            if errors and r.id in errors:
                r = OpResult(r.id, r.op, False, error=errors[r.id])
            out.append(r)
        return replace(resp, results=tuple(out))
