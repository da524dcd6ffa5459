"""Doctor one host (every step in order, read-only) and many hosts (in parallel)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kbfix.doctor import agent_steps, network
from kbfix.doctor.fixes import fix
from kbfix.doctor.model import HostDoctor, Step, StepStatus
from remoting.chunking import DEFAULT_MAX_ENVELOPE_SIZE
from remoting.errors import AuthRejectedError, CertificateError, QuotaError, RemotingError, UnreachableError

#: WinRM 2.0's MaxMemoryPerShellMB default (DESIGN.md): less than this is worth a warning.
MIN_MEMORY_PER_SHELL_MB = 150
AGENT_STEPS = ("agent", "powershell", "locale", "process", "fips", "elevation", "self_test", "wsus_api", "cm_logs")


def _skip_rest(report: HostDoctor, names: Sequence[str], why: str) -> None:
    for n in names:
        report.steps.append(Step(n, StepStatus.SKIP, why))


def _session_failure(exc: RemotingError, ep: Any, took: float) -> Step:
    username = ep.username or "the configured account"
    values = {"host": ep.host, "address": ep.address, "port": ep.effective_port, "scheme": ep.scheme}
    if isinstance(exc, QuotaError):
        return Step("authenticate", StepStatus.FAIL, f"authenticated, but no shell: {exc.message}",
                    fix("quota", username=username, **values), took, {"kind": exc.kind})
    if isinstance(exc, AuthRejectedError):
        return Step("authenticate", StepStatus.FAIL, f"{username} rejected ({ep.transport}): {exc.message}",
                    fix("auth_rejected", username=username, **values), took, {"kind": exc.kind})
    if isinstance(exc, CertificateError):
        return Step("authenticate", StepStatus.FAIL, exc.message,
                    fix("tls_chain", ca_file=ep.ca_trust_path or "the system CA store", reason=exc.message, **values), took)
    if isinstance(exc, UnreachableError):
        return Step("authenticate", StepStatus.FAIL, exc.message, fix("no_answer", reason=exc.message, **values), took,
                    {"kind": exc.kind})
    return Step("authenticate", StepStatus.FAIL, f"{exc.kind}: {exc.message}",
                fix("agent_failed", reason=exc.message, **values), took, {"kind": exc.kind})


def config_step(ep: Any) -> Step:
    """The WinRM quotas and envelope size from the config resource, when the account may read it."""
    t0 = time.monotonic()
    try:
        cfg = network.winrm_config(ep)
    except Exception as exc:
        took = time.monotonic() - t0
        code = str(getattr(exc, "code", "") or "")
        text = str(exc)
        if code == "5" or "AccessDenied" in text or "Access is denied" in text:
            return Step("winrm_config", StepStatus.WARN, "the account may not read winrm/config (access denied)",
                        fix("config_denied", host=ep.host), took)
        return Step("winrm_config", StepStatus.WARN, f"winrm/config not read: {type(exc).__name__}: {text[:200]}",
                    None, took)
    took = time.monotonic() - t0
    env_kb, shells = cfg.get("MaxEnvelopeSizekb"), cfg.get("MaxShellsPerUser")
    mem, idle = cfg.get("MaxMemoryPerShellMB"), cfg.get("IdleTimeout")
    keep = ("MaxEnvelopeSizekb", "MaxTimeoutms", "MaxShellsPerUser", "MaxMemoryPerShellMB", "IdleTimeout",
            "MaxProcessesPerShell", "MaxConcurrentUsers")
    data = {k: cfg[k] for k in keep if k in cfg}
    detail = (f"MaxEnvelopeSizekb {env_kb}, MaxShellsPerUser {shells}, MaxMemoryPerShellMB {mem}, "
              f"IdleTimeout {idle} ms")
    needed = DEFAULT_MAX_ENVELOPE_SIZE // 1024
    if env_kb is not None and env_kb < needed:
        return Step("winrm_config", StepStatus.FAIL, detail, fix("envelope_small", value=env_kb, needed=needed), took, data)
    if mem is not None and 0 < mem < MIN_MEMORY_PER_SHELL_MB:
        return Step("winrm_config", StepStatus.WARN, detail, fix("memory_small", value=mem), took, data)
    return Step("winrm_config", StepStatus.OK, detail, None, took, data)


def doctor_host(host: Any, session_factory: Callable[..., Any] | None = None, *,
                agent_deadline_s: float = agent_steps.DEFAULT_DEADLINE_S) -> HostDoctor:
    """Every step for one inventory host (see kbfix/doctor/__init__.py). Never raises for the
    host's own faults: each becomes a failed step with its fix. `agent_deadline_s`: seconds one
    agent request may take (at most the endpoint's command timeout)."""
    if session_factory is None:
        from remoting.session import AgentSession

        session_factory = AgentSession
    report = HostDoctor(host.name)
    ep = getattr(host, "endpoint", None)
    if ep is None:
        report.steps.append(Step("inventory", StepStatus.FAIL, getattr(host, "skipped_reason", None) or "no endpoint",
                                 "Give the host an address and credentials in the inventory, or collect offline: "
                                 f"`kbfix --limit {host.name} offline export -o offline/`."))
        return report
    step = network.connect_step(ep)
    report.steps.append(step)
    later = ("tls", "auth_offered", "authenticate", "winrm_config", *AGENT_STEPS)
    if step.status is StepStatus.FAIL:
        _skip_rest(report, later, "not reached: connect failed")
        return report
    step = network.tls_step(ep)
    report.steps.append(step)
    if step.status is StepStatus.FAIL:
        _skip_rest(report, later[1:], "not reached: TLS failed")
        return report
    step = network.auth_offered_step(ep)
    report.steps.append(step)
    if step.data.get("no_answer"):
        _skip_rest(report, later[3:], "not reached: no HTTP answer")
        return report
    t0 = time.monotonic()
    try:
        session = session_factory(ep, check_mode=True)
        session.__enter__()
    except RemotingError as exc:
        failed = _session_failure(exc, ep, time.monotonic() - t0)
        report.steps.append(failed)
        if isinstance(exc, QuotaError):  # authenticated: the quota itself can still be read
            report.steps.append(config_step(ep))
            _skip_rest(report, AGENT_STEPS, "not reached: no shell")
        else:
            _skip_rest(report, ("winrm_config", *AGENT_STEPS), "not reached: authentication failed")
        return report
    try:
        report.steps.append(Step("authenticate", StepStatus.OK, f"{ep.username or 'account'} ({ep.transport}): shell "
                                 f"opened in {(time.monotonic() - t0) * 1000:.0f} ms", None, time.monotonic() - t0))
        report.steps.append(config_step(ep))
        deadline = min(agent_deadline_s, ep.timeouts.command)
        env_steps, facts = agent_steps.environment_steps(session, host.name, deadline)
        report.steps.extend(env_steps)
        if facts is None:
            _skip_rest(report, ("self_test", "wsus_api", "cm_logs"), "not reached: the agent did not run")
            return report
        report.steps.append(agent_steps.self_test_step(session, host.name, deadline))
        report.steps.extend(agent_steps.role_steps(session, host.name, deadline))
    finally:
        session.__exit__(None, None, None)
    return report


def doctor_hosts(hosts: Sequence[Any], *, forks: int = 20, session_factory: Callable[..., Any] | None = None,
                 agent_deadline_s: float = agent_steps.DEFAULT_DEADLINE_S) -> list[HostDoctor]:
    """`doctor_host` for each host, `forks` at a time; results in host order."""
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(lambda h: doctor_host(h, session_factory, agent_deadline_s=agent_deadline_s), hosts))
