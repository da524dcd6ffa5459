"""A pure, in-memory stand-in for the agent's read ops, for assess() unit tests (no network).

It answers `gather_ops` with real codec types (`AgentResponse`, `OpResult`) following
remoting/PROTOCOL.md: `${reg:ID:NAME}` references (view 64 then 32), environment expansion by
arch, registry views (x64: 32-bit view = Wow6432Node), log.scan with byte offsets, rotated
`.lo_` siblings (oldest first) and encodings. The lab (`winlab`) is the full emulator; this is
only what assess needs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from remoting.agent_protocol import AgentResponse, OpError, OpRequest, OpResult

_REF = re.compile(r"\$\{reg:([A-Za-z0-9_.-]+):([^}]+)\}")


def _norm(path: str) -> str:
    return re.sub(r"\\+", r"\\", path).rstrip("\\").lower()


@dataclass
class FakeHost:
    """registry: physical key → {name: value}; files: path → version; logs: path → (bytes or str);
    products: [{name, product_code, version}]; wsus_updates: [{id, title, declined, approvals}]."""

    arch: str = "x64"
    culture: str = "en-US"
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    logs: dict[str, bytes | str] = field(default_factory=dict)
    products: list[dict[str, Any]] = field(default_factory=list)
    wsus_api: bool = False
    wsus_updates: list[dict[str, Any]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"programfiles": "C:\\Program Files", "windir": "C:\\WINDOWS", "systemroot": "C:\\WINDOWS"}

    def _view(self, key: str, view: str) -> dict[str, Any]:
        phys = key
        if view == "32" and self.arch == "x64" and key.lower().startswith("hklm\\software\\"):
            phys = "HKLM\\SOFTWARE\\Wow6432Node\\" + key[len("HKLM\\SOFTWARE\\"):]
        vals = {k.lower(): v for k, v in self.registry.items()}.get(_norm(phys))
        if vals is None:
            return {"exists": False, "path": phys, "values": {}, "subkeys": []}
        typed = {n: {"type": "REG_DWORD" if isinstance(v, int) else "REG_SZ", "value": v} for n, v in vals.items()}
        return {"exists": True, "path": phys, "values": typed, "subkeys": []}

    def _resolve(self, path: str, regs: dict[str, dict[str, Any]]) -> str:
        def sub(m: re.Match[str]) -> str:
            views = regs.get(m.group(1), {}).get("views", {})
            for v in ("64", "32"):
                val = views.get(v, {}).get("values", {}).get(m.group(2))
                if val is not None:
                    return str(val["value"])
            raise KeyError(m.group(0))

        path = _REF.sub(sub, path)
        env = self.env()
        return re.sub(r"%([^%]+)%", lambda m: env.get(m.group(1).lower(), m.group(0)), path)

    def _log_file(self, path: str, o: OpRequest) -> dict[str, Any]:
        logs = {_norm(k): v for k, v in self.logs.items()}
        raw = logs.get(_norm(path))
        if raw is None:
            return {"path": path, "exists": False, "size": 0, "encoding": "ansi", "start_offset": 0, "end_offset": 0,
                    "matches": [], "patterns_full": []}
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        if data.startswith(b"\xff\xfe"):
            enc, text = "utf-16le", data[2:].decode("utf-16-le")
        else:
            enc, text = "utf-8", data.decode("utf-8", "replace")
        pats = [re.compile(p, re.IGNORECASE) for p in o.texts("pattern")]
        maxm = o.integer("max_matches", 20)
        ctxn = o.integer("context", 0)
        lines = text.splitlines(keepends=True)
        matches: list[dict[str, Any]] = []
        counts = [0] * len(pats)
        offset = 2 if enc == "utf-16le" else 0
        for i, line in enumerate(lines):
            body = line.rstrip("\r\n")
            for j, p in enumerate(pats):
                if p.search(body) and counts[j] < maxm:
                    counts[j] += 1
                    matches.append({"pattern": j, "offset": offset, "line": body, "cut": False,
                                    "before": [x.rstrip("\r\n") for x in lines[max(0, i - ctxn):i]],
                                    "after": [x.rstrip("\r\n") for x in lines[i + 1:i + 1 + ctxn]]})
            offset += len(line.encode("utf-16-le" if enc == "utf-16le" else "utf-8"))
        return {"path": path, "exists": True, "size": len(data), "encoding": enc, "start_offset": 0,
                "end_offset": len(data), "matches": matches, "patterns_full": [j for j, c in enumerate(counts) if c >= maxm]}

    def answer(self, o: OpRequest, regs: dict[str, dict[str, Any]]) -> OpResult:
        try:
            if o.name == "registry.values":
                key = o.text("key") or ""
                data = {"views": {"64": self._view(key, "64"), "32": self._view(key, "32")}}
                regs[o.id] = data
                return OpResult(o.id, o.name, True, data)
            if o.name in ("file.info", "log.scan"):
                path = self._resolve(o.text("path") or "", regs)
                if o.name == "file.info":
                    files = {_norm(k): v for k, v in self.files.items()}
                    if _norm(path) not in files:
                        return OpResult(o.id, o.name, True, {"exists": False, "path": path})
                    return OpResult(o.id, o.name, True, {"exists": True, "path": path, "size": 1000,
                                                         "file_version": files[_norm(path)], "mtime": "2008-08-01T00:00:00Z"})
                out = []
                if o.flag("rotated"):
                    stem = re.sub(r"\.[^.\\]*$", "", path)
                    for sib in (stem + ".lo_",):
                        if _norm(sib) in {_norm(k) for k in self.logs}:
                            out.append(self._log_file(sib, o))
                out.append(self._log_file(path, o))
                return OpResult(o.id, o.name, True, {"files": out})
            if o.name == "products.list":
                pat = o.text("pattern") or "*"
                prods = [p for p in self.products if fnmatch.fnmatch(p["name"].lower(), pat.lower())]
                return OpResult(o.id, o.name, True, {"products": prods})
            if o.name == "wsus.find_update":
                title = (o.text("title") or "").lower()
                ups = [u for u in self.wsus_updates if u["title"].lower() == title] if self.wsus_api else []
                return OpResult(o.id, o.name, True, {"available": self.wsus_api, "updates": ups})
            if o.name == "service.status":
                return OpResult(o.id, o.name, True, {"services": {}})
        except KeyError as exc:
            return OpResult(o.id, o.name, False, error=OpError("not_found", f"unresolved reference {exc.args[0]}"))
        return OpResult(o.id, o.name, False, error=OpError("invalid_args", f"unknown op {o.name}"))

    def respond(self, ops: Sequence[OpRequest], *, drop: Sequence[str] = (), errors: dict[str, OpError] | None = None) -> AgentResponse:
        """The agent's response to `ops`; `drop` omits op ids, `errors` forces an op's error."""
        regs: dict[str, dict[str, Any]] = {}
        results = []
        for o in ops:
            if o.id in drop:
                continue
            if errors and o.id in errors:
                results.append(OpResult(o.id, o.name, False, error=errors[o.id]))
                continue
            results.append(self.answer(o, regs))
        host = {"computer_name": "HOST", "os_version": "6.0.6002", "arch": self.arch, "culture": self.culture, "ps_version": "2.0"}
        return AgentResponse(nonce="0" * 32, host=host, results=tuple(results))
