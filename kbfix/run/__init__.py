"""Run orchestration: check, plan and apply over many hosts, as values, with an audit trail.

`run_check`, `run_plan` and `run_apply` take hosts (inventory `Host`s or anything `HostLike`),
an `Engine` (the playbooks behind a small interface; `PlaybookEngine` is the real one), an
`AuditStore` and `RunOptions`, and return a `RunOutcome` (RunInfo + one `HostResult` per host,
the same value from gather to report). The CLI and `kbfix demo` are thin layers over them.

Modules: `schedule` (batches, forks, max-fail, stop, links), `check` (ping, check, one host's
gather), `plan`, `apply` (one host's apply), `sources` (where a host's planned work comes from:
a reviewed plan or a resumed run), `recovery` (what crashed/resumed runs left, from the store),
`results` (results the run makes itself, exit code), `options`, `protocols`, `playbook_engine`.
A host's exception becomes its result (failed/unreachable/unknown), never a crash of the run.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbfix.run.apply import run_apply
    from kbfix.run.check import run_check, run_ping
    from kbfix.run.options import RunControl, RunOptions, RunOutcome, kbfix_version
    from kbfix.run.plan import run_plan
    from kbfix.run.protocols import Engine, HostLike, Progress
    from kbfix.run.results import error_result, exit_code, finish_code, skip_reason, skipped_result

# cost (issue 19): the names load their module on first use (PEP 562). A `--procs` contact
# process imports kbfix.run.procs, which needs neither the store (SQLAlchemy) nor apply and plan
# files; importing them all cost the forkserver ~0.3 s of CPU per run.
_HOME = {
    "run_apply": "apply", "run_check": "check", "run_ping": "check", "RunControl": "options", "RunOptions": "options",
    "RunOutcome": "options", "kbfix_version": "options", "run_plan": "plan", "Engine": "protocols",
    "HostLike": "protocols", "Progress": "protocols", "error_result": "results", "exit_code": "results",
    "finish_code": "results",
    "skip_reason": "results", "skipped_result": "results",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"kbfix.run.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Engine",
    "HostLike",
    "Progress",
    "RunControl",
    "RunOptions",
    "RunOutcome",
    "error_result",
    "exit_code",
    "finish_code",
    "kbfix_version",
    "run_apply",
    "run_check",
    "run_ping",
    "run_plan",
    "skip_reason",
    "skipped_result",
]
