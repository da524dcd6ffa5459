"""Traces → lab fixtures: a real server's answers (kbfix/trace.py) become a winlab host whose
check gives the same findings (`kbfix lab fixture-from-trace DIR -o FIXTURE.yaml`).

Each successful read op of every exchange contributes what Windows showed:

- `registry.values`: each existing view's physical key with its typed values (and its listed
  subkeys as empty keys), so both the 64-bit and the WOW6432Node view answer as on the server;
- `file.info`: the file with its version resources and mtime (contents are unknown: empty);
- `log.scan`: the file rebuilt from the matched lines and their context, in offset order, in the
  encoding the agent reported (the lab's scan finds the same lines; byte offsets differ);
- `products.list`, `products.patches`, `service.status`, `wsus.find_update`: the products, patch
  registrations (packed codes unpacked to GUIDs), services, updates and replica flag seen;
- `host.environment`: the registry values the facts come from (see winlab/emulate_environment.py).

A session the server would not open (`phase: open` in the trace) becomes the fault that fails
the same way: refused connection → `faults.connect: refused`, rejected credentials →
`faults.auth: reject`, shell quota → `faults.quota: true`. Ops that failed or were not asked are
absent from the fixture, exactly as they are absent from the evidence. Later exchanges win over earlier ones. The account is a lab placeholder (a trace
never holds a password).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from winlab.emulate_environment import LSA_KEY, NDP_KEY, NLS_KEY, POLICIES_KEY, PS_ENGINE_KEY
from winlab.fixtures import load_templates_text
from winlab.hoststate import pack_guid

__all__ = ["DEFAULT_ACCOUNT", "fixture_from_traces", "host_from_trace", "read_trace_file", "trace_files", "write_fixture"]

DEFAULT_ACCOUNT = {"kbfix": "kbfix-lab-Secret-1"}
_ENCODINGS = {"utf-16le": "utf-16le", "utf-16be": "utf-16be", "utf-8": "utf-8", "ansi": "ansi"}


class _HostBuilder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.os: dict[str, str] = {}
        self.registry: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.products: dict[tuple[str, str | None, str | None], dict[str, Any]] = {}
        self.services: dict[str, dict[str, str]] = {}
        self.wsus_api: bool | None = None
        self.wsus_updates: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, Any] = {}
        self.logs: dict[str, dict[int, tuple[list[str], str, list[str]]]] = {}
        self.log_meta: dict[str, dict[str, str]] = {}
        self.patches: dict[tuple[str, str], dict[str, Any]] = {}
        self.wsus_replica = False
        self._log_clock = datetime(2008, 8, 1, 12, 0, tzinfo=timezone.utc)

    # --- per op -----------------------------------------------------------------------------

    def host_info(self, info: Mapping[str, Any]) -> None:
        arch = str(info.get("arch") or "x64")
        self.os = {"version": str(info.get("os_version") or "5.2.3790"), "arch": "x86" if arch == "x86" else "x64",
                   "culture": str(info.get("culture") or "en-US")}

    def registry_values(self, data: Mapping[str, Any]) -> None:
        for view in (data.get("views") or {}).values():
            if not isinstance(view, dict) or not view.get("exists"):
                continue
            key = str(view.get("path"))
            values = self.registry.setdefault(key, {})
            for name, entry in (view.get("values") or {}).items():
                values[str(name)] = {"type": entry["type"], "value": entry["value"]}
            for sub in view.get("subkeys") or []:
                self.registry.setdefault(f"{key}\\{sub}", {})

    def file_info(self, data: Mapping[str, Any]) -> None:
        if not data.get("exists"):
            return
        entry: dict[str, Any] = {}
        for src, dst in (("file_version", "version"), ("file_version_string", "version_string"),
                         ("product_version", "product_version"), ("mtime", "mtime")):
            if data.get(src):
                entry[dst] = data[src]
        if "version" not in entry and "version_string" in entry:
            entry["version"] = entry["version_string"]
        path = _fold(str(data["path"]))
        self.files[path] = {**self.files.get(path, {}), **entry}

    def log_scan(self, data: Mapping[str, Any]) -> None:
        # Several ops may scan one file (other patterns, other windows): every match of every scan
        # is kept by byte offset, with the longest context seen; the text is built in `model`.
        for f in data.get("files") or []:
            if not f.get("exists"):
                continue
            path = _fold(str(f["path"]))
            if path not in self.logs:
                self._log_clock += timedelta(minutes=1)  # rotated siblings come first: oldest first
                self.logs[path] = {}
                self.log_meta[path] = {"encoding": _ENCODINGS.get(str(f.get("encoding")), "utf-8"),
                                       "mtime": self._log_clock.isoformat()}
            seen = self.logs[path]
            for m in f.get("matches") or []:
                offset = int(m.get("offset") or 0)
                before, after = list(m.get("before") or []), list(m.get("after") or [])
                old = seen.get(offset)
                if old is not None:
                    before = before if len(before) >= len(old[0]) else old[0]
                    after = after if len(after) >= len(old[2]) else old[2]
                seen[offset] = (before, str(m["line"]), after)

    def _log_text(self, path: str) -> str:
        lines: list[str] = []
        for _offset, (before, line, after) in sorted(self.logs[path].items()):
            block = [*before, line, *after]
            # Matches close together share context: write only the part of the block that does
            # not continue what is already written.
            k = next((n for n in range(min(len(block), len(lines)), 0, -1) if lines[-n:] == block[:n]), 0)
            lines.extend(block[k:])
        return "\n".join(lines) + ("\n" if lines else "")

    def products_list(self, data: Mapping[str, Any]) -> None:
        for p in data.get("products") or []:
            item = {"name": p["name"]}
            for src, dst in (("version", "version"), ("publisher", "publisher"), ("product_code", "code"),
                             ("view", "view"), ("install_date", "install_date")):
                if p.get(src) is not None:
                    item[dst] = str(p[src])
            self.products[(item["name"], item.get("code"), item.get("view"))] = item

    def products_patches(self, data: Mapping[str, Any]) -> None:
        for pa in data.get("patches") or []:
            try:
                product, code = unpack_guid(str(pa["product_code"])), unpack_guid(str(pa["patch_code"]))
            except (KeyError, ValueError):
                continue  # not a Windows Installer packed GUID: nothing the lab can register
            item: dict[str, Any] = {"product": product, "code": code, "name": str(pa.get("name") or "")}
            if pa.get("state") in (1, 2, 4):
                item["state"] = pa["state"]
            if pa.get("installed"):
                item["installed"] = str(pa["installed"])
            self.patches[(product, code)] = item

    def service_status(self, data: Mapping[str, Any]) -> None:
        for name, s in (data.get("services") or {}).items():
            if s.get("exists"):
                self.services[str(name)] = {"status": str(s.get("status") or "Running"),
                                            "start_mode": str(s.get("start_mode") or "Auto")}

    def wsus_find_update(self, data: Mapping[str, Any]) -> None:
        self.wsus_api = bool(data.get("available"))
        if data.get("replica"):
            self.wsus_replica = True
        for u in data.get("updates") or []:
            item = {
                "id": str(u["id"]), "title": str(u["title"]), "declined": bool(u.get("declined")),
                "approvals": [{"group": str(a["group"]), "action": str(a.get("action") or "Install")}
                              for a in u.get("approvals") or []]}
            if u.get("requires_license"):
                item["requires_license"] = True
            self.wsus_updates[str(u["id"])] = item

    def host_environment(self, data: Mapping[str, Any]) -> None:
        def put(key: str, name: str, type_: str, value: Any) -> None:
            self.registry.setdefault(key, {})[name] = {"type": type_, "value": value}

        if data.get("ps_version"):
            put(PS_ENGINE_KEY, "PowerShellVersion", "REG_SZ", str(data["ps_version"]))
        for v in data.get("dotnet") or []:
            put(f"{NDP_KEY}\\v{v}", "Install", "REG_DWORD", 1)
        if data.get("ansi_codepage") is not None:
            put(NLS_KEY, "ACP", "REG_SZ", str(data["ansi_codepage"]))
        if data.get("oem_codepage") is not None:
            put(NLS_KEY, "OEMCP", "REG_SZ", str(data["oem_codepage"]))
        if data.get("fips_policy"):
            put(LSA_KEY + r"\FipsAlgorithmPolicy", "Enabled", "REG_DWORD", 1)
        if data.get("local_account_token_filter_policy") is not None:
            put(POLICIES_KEY, "LocalAccountTokenFilterPolicy", "REG_DWORD", int(data["local_account_token_filter_policy"]))

    def open_failure(self, kind: str, error_type: str) -> None:
        """A session the server would not open becomes the lab fault that fails the same way."""
        if kind == "unreachable" and error_type != "CommandTimeoutError":
            self.faults["connect"] = "refused"
        elif kind == "auth":
            self.faults["auth"] = "reject"
        elif kind == "quota":
            self.faults["quota"] = True

    # --- output -----------------------------------------------------------------------------

    def model(self, account: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.os:
            out["os"] = self.os
        out["accounts"] = dict(account)
        if self.registry:
            out["registry"] = self.registry
        files = {p: dict(v) for p, v in self.files.items()}
        for path in self.logs:
            versions = {k: v for k, v in files.get(path, {}).items() if k in ("version", "version_string", "product_version")}
            files[path] = {**versions, "text": self._log_text(path), **self.log_meta[path]}
        if files:
            out["files"] = files
        if self.services:
            out["services"] = self.services
        if self.products:
            out["products"] = list(self.products.values())
        if self.patches:
            out["patches"] = list(self.patches.values())
        if self.wsus_updates:
            out["wsus_updates"] = list(self.wsus_updates.values())
        if self.wsus_replica:
            out["wsus_replica"] = True
        if self.wsus_api is not None:
            out["wsus_api"] = self.wsus_api
        if self.faults:
            out["faults"] = self.faults
        return out


_OPS = {
    "registry.values": _HostBuilder.registry_values,
    "file.info": _HostBuilder.file_info,
    "log.scan": _HostBuilder.log_scan,
    "products.list": _HostBuilder.products_list,
    "products.patches": _HostBuilder.products_patches,
    "service.status": _HostBuilder.service_status,
    "wsus.find_update": _HostBuilder.wsus_find_update,
    "host.environment": _HostBuilder.host_environment,
}


def _fold(path: str) -> str:
    """A Windows path with repeated separators folded (`TargetDir\\` + `\\LogFiles`), a UNC prefix kept."""
    unc = path.startswith("\\\\")
    folded = re.sub(r"\\{2,}", r"\\", path)
    return "\\" + folded if unc else folded


def unpack_guid(packed: str) -> str:
    """`{GUID}` of a Windows Installer packed GUID (the packing is its own inverse, see
    winlab.hoststate.pack_guid). Raises ValueError for anything else."""
    h = packed.strip().upper()
    if len(h) != 32 or any(c not in "0123456789ABCDEF" for c in h):
        raise ValueError(f"not a packed GUID: {packed!r}")
    raw = h[0:8][::-1] + h[8:12][::-1] + h[12:16][::-1] + "".join(h[i + 1] + h[i] for i in range(16, 32, 2))
    guid = "{" + f"{raw[0:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}" + "}"
    if pack_guid(guid) != h:
        raise ValueError(f"not a packed GUID: {packed!r}")
    return guid


def host_from_trace(trace: Mapping[str, Any], account: Mapping[str, str] = DEFAULT_ACCOUNT) -> dict[str, Any]:
    """One fixture host (a `hosts:` item) from one trace document (see kbfix/trace.py)."""
    b = _HostBuilder(str(trace["host"]))
    for ex in trace.get("exchanges") or []:
        err = ex.get("error") if isinstance(ex, dict) else None
        if isinstance(err, dict) and ex.get("phase") == "open":
            b.open_failure(str(err.get("kind")), str(err.get("type")))
        resp = ex.get("response") if isinstance(ex, dict) else None
        if not isinstance(resp, dict):
            continue
        if isinstance(resp.get("host"), dict):
            b.host_info(resp["host"])
        for r in resp.get("results") or []:
            handler = _OPS.get(str(r.get("op")))
            if handler is not None and r.get("ok") and isinstance(r.get("data"), dict):
                handler(b, r["data"])
    return b.model(account)


def fixture_from_traces(traces: Iterable[Mapping[str, Any]], account: Mapping[str, str] = DEFAULT_ACCOUNT) -> str:
    """Fixture YAML text for the traced hosts; validated by the fixture loader before it is
    returned (raises winlab.fixtures.FixtureError if it would not load)."""
    hosts = [host_from_trace(t, account) for t in traces]
    header = ("# Written by `kbfix lab fixture-from-trace` from agent traces (kbfix/trace.py).\n"
              "# Registry, files, logs, products, services and WSUS updates are what the server answered;\n"
              "# log files hold the matched lines and their context only. The account is a lab placeholder.\n")
    text = header + yaml.safe_dump({"hosts": hosts}, sort_keys=False, allow_unicode=True, width=200)
    load_templates_text(text, "<fixture-from-trace>")
    return text


def write_fixture(trace_paths: Iterable[Path], output: Path, account: Mapping[str, str] = DEFAULT_ACCOUNT) -> Path:
    """Read the trace files and write the fixture to `output` (only once it validates)."""
    text = fixture_from_traces([read_trace_file(p) for p in trace_paths], account)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return output


def read_trace_file(path: Path) -> dict[str, Any]:
    """Load one trace file (format: kbfix/trace.py). Raises ValueError naming the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON trace: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kbfix_trace") != 1 or not isinstance(doc.get("exchanges"), list) \
            or not isinstance(doc.get("host"), str):
        raise ValueError(f"{path}: not a kbfix trace (expected kbfix_trace: 1, host and an exchanges list)")
    return doc


def trace_files(path: Path) -> list[Path]:
    """`path` itself, or every `*.trace.json` in the folder `path` (sorted). Raises ValueError when none."""
    path = Path(path)
    files = sorted(path.glob("*.trace.json")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise ValueError(f"{path}: no *.trace.json trace files")
    return files
