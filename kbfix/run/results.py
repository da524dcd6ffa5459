"""The few ways a host's result is made outside the playbooks, and the run's exit code.

Every status the run itself decides comes from here: an exception (`error_result`), a host the
run did not work on (`skipped_result`, typed `SkipReason`), a host the inventory disables or
cannot reach (`inventory_result`), a deadline (`timeout_result`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from kbfix.exitcodes import ExitCode
from kbfix.run.protocols import HostLike
from playbooks.model import ErrorKind, Finding, HostError, HostResult, SkipReason, Status, utc_now, worst


def address_of(host: HostLike) -> str | None:
    """The host's network address from its endpoint, or None."""
    address = getattr(host.endpoint, "address", None)
    return address if isinstance(address, str) else None


def error_result(host: HostLike, exc: BaseException, *, started: datetime | None = None) -> HostResult:
    """The HostResult of a host whose work raised `exc`.

    Remoting errors keep their kind (`ErrorKind.status`: unreachable/timeout → unreachable,
    unknown → unknown, others → failed); any other exception is `failed` with kind `internal`.
    """
    kind = ErrorKind.of(getattr(exc, "kind", None))
    hresult = getattr(exc, "hresult", None)
    if kind is None:
        kind, message = ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    return HostResult(
        host=host.name, address=address_of(host), site=host.site, status=kind.status,
        error=HostError(kind=kind, message=message, hresult=hresult if isinstance(hresult, str) else None),
        started=started or utc_now(), ended=utc_now(),
    )


def _still_open(f: Finding, planned_for: frozenset[str]) -> bool:
    return f.status.is_vulnerable or f.status.is_failure or bool(f.planned) or f.advisory in planned_for


def skipped_result(host: HostLike, reason: SkipReason, detail: str, findings: Sequence[Finding] = (),
                   *, planned_for: frozenset[str] = frozenset()) -> HostResult:
    """A host the run did not work on (or stopped working on): findings that still needed work
    (or whose advisory is in `planned_for`: the plan had actions for it) become `skipped` with
    `skip_reason`; compliant/not-applicable ones keep their status. The host is `skipped` when
    any finding is (or it has none); `detail` says why, for people."""
    out = [f.model_copy(update={"status": Status.SKIPPED, "skip_reason": reason, "reason": f"{detail}; {f.reason}"})
           if _still_open(f, planned_for) else f for f in findings]
    status = Status.SKIPPED if not out or any(f.status is Status.SKIPPED for f in out) else worst([f.status for f in out])
    return HostResult(
        host=host.name, address=address_of(host), site=host.site, status=status, findings=out, skip_reason=reason,
        error=None if out else HostError(kind=ErrorKind.SKIPPED, message=f"{reason.value}: {detail}"),
        ended=utc_now(),
    )


def inventory_result(host: HostLike) -> HostResult | None:
    """The result of a host the inventory disables (`skipped: disabled`) or gives no endpoint
    (`failed`, kind config); None for a host the run can work on."""
    if host.skipped_reason:
        return HostResult(host=host.name, site=host.site, status=Status.SKIPPED, skip_reason=SkipReason.DISABLED,
                          error=HostError(kind=ErrorKind.SKIPPED, message=f"inventory: {host.skipped_reason}"))
    if host.endpoint is None:
        return HostResult(host=host.name, site=host.site, status=Status.FAILED,
                          error=HostError(kind=ErrorKind.CONFIG, message="no endpoint (address/credentials) in the inventory"))
    return None


def timeout_result(host: HostLike, *, stopping: bool, grace_s: float) -> HostResult:
    """A host past its deadline: `unreachable` (kind timeout), or `unknown` (kind interrupted)
    when it was still running `grace_s` seconds after a stop request."""
    if stopping:
        msg = f"still running {grace_s:g} s after the stop request; left to finish, outcome not awaited"
        return HostResult(host=host.name, address=address_of(host), site=host.site, status=Status.UNKNOWN,
                          error=HostError(kind=ErrorKind.INTERRUPTED, message=msg), ended=utc_now())
    return HostResult(host=host.name, address=address_of(host), site=host.site, status=Status.UNREACHABLE,
                      error=HostError(kind=ErrorKind.TIMEOUT, message="host did not finish within its deadline"),
                      ended=utc_now())


def skip_reason(result: HostResult) -> SkipReason | None:
    """The run-level skip reason of a host (`window`, `drift`, ...), else None."""
    return result.run_skip


def nothing_in_scope(results: Sequence[HostResult]) -> str | None:
    """A sentence when the run had hosts but none in scope (every one disabled by the inventory,
    e.g. not WinRM): nothing was done; None otherwise (also for no results at all)."""
    if not results or any(r.skip_reason is not SkipReason.DISABLED for r in results):
        return None
    names = ", ".join(r.host for r in results[:5]) + (f" and {len(results) - 5} more" if len(results) > 5 else "")
    return (f"kbfix: no host in scope: the selected host(s) ({names}) are disabled by the inventory "
            "(e.g. not WinRM); nothing was done (exit code 3)")


def finish_code(results: Sequence[HostResult], say: Callable[[str], None]) -> int:
    """`exit_code(results)`, first telling `say` (stderr in the CLI) when no host was in scope."""
    message = nothing_in_scope(results)
    if message is not None:
        say(message)
    return int(exit_code(results))


def exit_code(results: Sequence[HostResult]) -> int:
    """The CLI exit code of a run's results.

    4: some host unreachable, failed or unknown; else 3: some host needs work (non-compliant,
    pending a reboot) or was skipped by this run (window, drift, max-fail, interrupted, locked,
    not in the plan), or no host was in scope at all (every selected host disabled by the
    inventory: nothing was done, `nothing_in_scope`); else 0 (all compliant, remediated,
    mitigated — a documented workaround counts as compliant — or not applicable; hosts the
    inventory disables are out of scope when others are in it).
    """
    if nothing_in_scope(results) is not None:
        return ExitCode.NON_COMPLIANT
    if any(r.status.is_failure for r in results):
        return ExitCode.FAILED
    if any(r.status.needs_work for r in results):
        return ExitCode.NON_COMPLIANT
    if any(r.status is Status.SKIPPED and (s := r.run_skip) is not None and s.leaves_work for r in results):
        return ExitCode.NON_COMPLIANT
    return ExitCode.OK
