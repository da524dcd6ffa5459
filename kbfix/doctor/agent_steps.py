"""Doctor steps over an open agent session (read-only ops only; the session is in check mode):
the environment facts (`host.environment`), the self-test (each read op once, timed), the WSUS
admin API and the ConfigMgr Logs folder."""

from __future__ import annotations

import time
from typing import Any

from kbfix.doctor.fixes import fix
from kbfix.doctor.model import Step, StepStatus
from remoting.agent_protocol import OpRequest, op
from remoting.errors import RemotingError
from remoting.ops import OPS

WSUS_SETUP = r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup"
SMS_SETUP = r"HKLM\SOFTWARE\Microsoft\SMS\Setup"
#: Seconds one doctor agent request may take: its ops are trivial, so a host that needs longer has
#: a problem worth reporting rather than waiting the endpoint's full command timeout for.
DEFAULT_DEADLINE_S = 60.0

#: One harmless instance of each read op (a missing file or key is a valid answer).
SELF_TEST: dict[str, OpRequest] = {
    "env.expand": op("t", "env.expand", text="%SystemRoot%"),
    "registry.values": op("t", "registry.values", key=r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion",
                          name=["CurrentVersion", "CurrentBuildNumber"]),
    "file.info": op("t", "file.info", path=r"%SystemRoot%\system32\kernel32.dll"),
    "log.scan": op("t", "log.scan", path=r"%SystemRoot%\WindowsUpdate.log", pattern="SyncUpdates", max_matches=1,
                   tail_bytes=65536),
    "products.list": op("t", "products.list", pattern="Microsoft Windows Server Update Services*"),
    "products.patches": op("t", "products.patches", pattern="*KB954474*"),
    "service.status": op("t", "service.status", name="WinRM"),
    "wsus.find_update": op("t", "wsus.find_update", title="kbfix doctor self-test"),
    "host.environment": op("t", "host.environment"),
    "system.reboot_state": op("t", "system.reboot_state"),
}


def _values(host: str, **kw: Any) -> dict[str, Any]:
    return {"host": host, **kw}


def environment_steps(session: Any, host: str, deadline_s: float = DEFAULT_DEADLINE_S) -> tuple[list[Step], dict[str, Any] | None]:
    """`powershell`, `locale`, `process`, `fips`, `elevation` from one `host.environment` op.
    Returns (steps, facts or None when the agent could not run)."""
    t0 = time.monotonic()
    try:
        resp = session.run([op("env", "host.environment")], deadline_s=deadline_s)
    except RemotingError as exc:
        return [Step("agent", StepStatus.FAIL, f"the agent did not answer: {exc}",
                     fix("agent_failed", **_values(host, reason=str(exc))), time.monotonic() - t0)], None
    took = time.monotonic() - t0
    r = resp.results[0] if resp.results else None
    if r is None or not r.ok or r.data is None:
        reason = r.error.message if r is not None and r.error else "no result"
        return [Step("agent", StepStatus.FAIL, f"host.environment failed: {reason}",
                     fix("agent_failed", **_values(host, reason=reason)), took)], None
    d = r.data
    steps = [Step("agent", StepStatus.OK, f"agent answered in {took * 1000:.0f} ms "
                  f"({resp.host.get('computer_name')}, Windows {resp.host.get('os_version')})", None, took,
                  {"host": dict(resp.host)})]
    ps = str(d.get("ps_version") or "")
    dotnet = [str(v) for v in d.get("dotnet") or []]
    ps_ok = ps[:1].isdigit() and int(ps.split(".")[0]) >= 2
    steps.append(Step("powershell", StepStatus.OK if ps_ok else StepStatus.FAIL,
                      f"PowerShell {ps or '?'}, CLR {d.get('clr_version')}, .NET {', '.join(dotnet) or 'none registered'}",
                      None if ps_ok else fix("powershell_missing", **_values(host)), 0.0,
                      {k: d.get(k) for k in ("ps_version", "clr_version", "dotnet")}))
    steps.append(Step("locale", StepStatus.OK,
                      f"culture {d.get('culture')}, OS language {d.get('os_language')}, ANSI code page "
                      f"{d.get('ansi_codepage')}, OEM code page {d.get('oem_codepage')}", None, 0.0,
                      {k: d.get(k) for k in ("culture", "os_language", "ansi_codepage", "oem_codepage")}))
    if d.get("os_64bit") and not d.get("process_64bit"):
        steps.append(Step("process", StepStatus.WARN, "32-bit PowerShell on 64-bit Windows",
                          fix("process_32bit", **_values(host)), 0.0))
    else:
        steps.append(Step("process", StepStatus.OK, f"{'64' if d.get('process_64bit') else '32'}-bit PowerShell on "
                          f"{'64' if d.get('os_64bit') else '32'}-bit Windows", None, 0.0))
    fips = bool(d.get("fips_policy"))
    has35 = any(v.startswith(("3.5", "4")) for v in dotnet)
    if fips and not has35:
        steps.append(Step("fips", StepStatus.WARN, "FIPS policy on, .NET 3.5 not installed",
                          fix("fips_no_net35", **_values(host)), 0.0, {"fips_policy": True}))
    else:
        steps.append(Step("fips", StepStatus.OK, f"FIPS policy {'on (.NET 3.5 present)' if fips else 'off'}", None, 0.0,
                          {"fips_policy": fips}))
    user = d.get("user")
    latfp = d.get("local_account_token_filter_policy")
    if d.get("elevated"):
        steps.append(Step("elevation", StepStatus.OK, f"{user}: administrator token", None, 0.0,
                          {"elevated": True, "local_account": d.get("local_account")}))
    else:
        detail = f"{user}: filtered token (not elevated)" + (
            f"; local account, LocalAccountTokenFilterPolicy={latfp if latfp is not None else 'not set'}"
            if d.get("local_account") else "")
        steps.append(Step("elevation", StepStatus.FAIL, detail, fix("not_elevated", **_values(host)), 0.0,
                          {"elevated": False, "local_account": d.get("local_account"),
                           "local_account_token_filter_policy": latfp}))
    return steps, d


def self_test_step(session: Any, host: str, deadline_s: float = DEFAULT_DEADLINE_S) -> Step:
    """Run each read op of the op table once, one request each, and time it."""
    timings: dict[str, float] = {}
    failures: list[tuple[str, str]] = []
    t_all = time.monotonic()
    for name, spec in OPS.items():
        if spec.mutating:
            continue
        request = SELF_TEST.get(name)
        if request is None:
            failures.append((name, "no self-test for this op"))
            continue
        t0 = time.monotonic()
        try:
            resp = session.run([request], deadline_s=deadline_s)
        except RemotingError as exc:
            failures.append((name, str(exc)))
            continue
        timings[name] = round((time.monotonic() - t0) * 1000, 1)
        res = resp.results[0] if resp.results else None
        if res is None or (not res.ok and (res.error is None or res.error.kind != "not_found")):
            failures.append((name, f"{res.error.kind}: {res.error.message}" if res and res.error else "no result"))
    took = time.monotonic() - t_all
    detail = ", ".join(f"{k} {v:g} ms" for k, v in timings.items())
    if failures:
        name, reason = failures[0]
        return Step("self_test", StepStatus.FAIL, f"{len(failures)} op(s) failed: " + "; ".join(
            f"{n}: {r}" for n, r in failures) + (f" (ok: {detail})" if detail else ""),
            fix("self_test", **_values(host, op=name, reason=reason)), took, {"ms": timings})
    return Step("self_test", StepStatus.OK, detail, None, took, {"ms": timings})


def role_steps(session: Any, host: str, deadline_s: float = DEFAULT_DEADLINE_S) -> list[Step]:
    """`wsus_api` on a WSUS server (Update Services Setup key present) and `cm_logs` on a
    ConfigMgr site server (SMS Setup key present); skipped steps say why."""
    t0 = time.monotonic()
    try:
        resp = session.run([op("wsus", "registry.values", key=WSUS_SETUP, name="TargetDir"),
                            op("sms_setup", "registry.values", key=SMS_SETUP, name="Installation Directory"),
                            op("api", "wsus.find_update", title="kbfix doctor"),
                            op("cmlog", "log.scan", path=r"${reg:sms_setup:Installation Directory}\Logs\wsyncmgr.log",
                               pattern="STATMSG", max_matches=1, tail_bytes=65536)], deadline_s=deadline_s)
    except RemotingError as exc:
        return [Step("roles", StepStatus.FAIL, f"role probe failed: {exc}", fix("agent_failed", **_values(
            host, reason=str(exc))), time.monotonic() - t0)]
    took = time.monotonic() - t0
    by = resp.by_id()

    def exists(rid: str) -> bool:
        r = by.get(rid)
        return bool(r and r.ok and r.data and any(v.get("exists") for v in (r.data.get("views") or {}).values()))

    steps: list[Step] = []
    if exists("wsus"):
        api = by.get("api")
        if api is not None and api.ok and api.data and api.data.get("available"):
            steps.append(Step("wsus_api", StepStatus.OK, "WSUS administration API loads", None, took))
        else:
            reason = api.error.message if api is not None and api.error else "Microsoft.UpdateServices.Administration not loaded"
            steps.append(Step("wsus_api", StepStatus.FAIL, f"WSUS server, but the admin API does not load ({reason})",
                              fix("wsus_api", **_values(host)), took))
    else:
        steps.append(Step("wsus_api", StepStatus.SKIP, "not a WSUS server (no Update Services setup key)", None, 0.0))
    if exists("sms_setup"):
        log = by.get("cmlog")
        files = (log.data or {}).get("files", []) if log is not None and log.ok else []
        path = files[-1]["path"] if files else r"<Installation Directory>\Logs"
        folder = path.rsplit("\\", 1)[0]
        if log is not None and log.ok and files and files[-1].get("exists"):
            steps.append(Step("cm_logs", StepStatus.OK, f"{folder} readable (wsyncmgr.log, {files[-1].get('size')} bytes)",
                              None, took))
        elif log is not None and log.ok:
            steps.append(Step("cm_logs", StepStatus.WARN, f"{folder}: wsyncmgr.log not found (no WSUS sync on this site?)",
                              None, took))
        else:
            reason = f"{log.error.kind}: {log.error.message}" if log is not None and log.error else "no answer"
            steps.append(Step("cm_logs", StepStatus.FAIL, f"cannot read {folder}: {reason}",
                              fix("cm_logs", **_values(host, path=folder, reason=reason)), took))
    else:
        steps.append(Step("cm_logs", StepStatus.SKIP, "not a ConfigMgr site server (no SMS setup key)", None, 0.0))
    return steps
