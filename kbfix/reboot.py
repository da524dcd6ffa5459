"""The restart step of `kbfix apply` (issue 21): between apply and verify, one call.

`restart_and_verify` replaces the runner's `engine.verify(session, host, applied)`: it reads the
host's pending-reboot state on the open session, decides with the run's `RebootOptions`
(playbooks.reboot.reboot_reason), checks that the change window still leaves the restart's
budget (pre-reboot delay + timeout), runs the journalled restart-and-wait sequence
(playbooks.reboot.reboot_and_wait) with fresh read-only sessions as probes, and verifies on a
fresh session after the restart. A host that does not come back is `failed` with the reason
(no verify: it does not answer), which counts toward max-fail like any failure. Hosts run in
their own forks, so the others of the batch go on meanwhile.

A host's inventory variable `kbfix_post_reboot_delay` (whole seconds, 0-3600) overrides the
run's post_reboot_delay for that host (`options_for`); `check_host_reboot_vars` refuses a bad
one before any host is contacted.

This module is the only place the runner learns about restarts (hook marked `reboot (issue 21)`
in kbfix/runner.py); the sequence itself lives in playbooks/reboot.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kbfix.window import ChangeWindow
from playbooks.model import Finding, Status
from playbooks.reboot import (
    POST_REBOOT_DELAY_VAR,
    RebootOptions,
    attach_reboot,
    check_post_reboot_delay,
    note_not_rebooted,
    read_reboot_state,
    reboot_and_wait,
    reboot_reason,
)
from playbooks.reboot_facts import REBOOT_STATE_ID, RebootState
from remoting.errors import RemotingError


def pending_after_resume(findings: Sequence[Finding], facts: Mapping[str, Any]) -> list[Finding]:
    """Resume: a finding whose remedy already succeeded in the resumed run (so nothing is left
    to run) yet still reads unfixed is `pending_reboot`, not `failed`, while Windows reports a
    restart pending (`facts["reboot_state"]`, playbooks.reboot_facts): the fix lands at the restart."""
    raw = facts.get(REBOOT_STATE_ID)
    state = RebootState.model_validate(raw) if isinstance(raw, Mapping) else None
    if state is None or not state.pending:
        return list(findings)
    return [f.model_copy(update={"status": Status.PENDING_REBOOT,
                                 "reason": f"{f.reason}; Windows reports a restart pending ({state.describe()})"})
            if f.status is Status.FAILED and not f.planned and "already succeeded" in f.reason else f
            for f in findings]


def options_for(options: RebootOptions, host: Any) -> RebootOptions:
    """The run's options with the host's own `kbfix_post_reboot_delay`, when it has one.
    Raises RebootOptionError (naming the host and variable) for a value out of 0..3600."""
    raw = (getattr(host, "vars", None) or {}).get(POST_REBOOT_DELAY_VAR)
    if raw is None:
        return options
    delay = check_post_reboot_delay(raw, f"{getattr(host, 'name', '?')}: {POST_REBOOT_DELAY_VAR}")
    return dataclasses.replace(options, post_reboot_delay=delay)


def check_host_reboot_vars(hosts: Iterable[Any]) -> None:
    """Refuse, before contact, a host whose `kbfix_post_reboot_delay` is out of range (RebootOptionError)."""
    for host in hosts:
        options_for(RebootOptions(), host)


def restart_budget(options: RebootOptions, host: Any = None) -> float:
    """Seconds a host's run may additionally take for a restart (0 with policy `never`); with
    `host`, its own post_reboot_delay counts."""
    if options.policy == "never":
        return 0.0
    return (options_for(options, host) if host is not None else options).budget_s


def restart_and_verify(
    engine: Any,
    host: Any,
    session: Any,
    applied: Sequence[Finding],
    options: RebootOptions,
    journal: Any,
    *,
    window: ChangeWindow | None,
    clock: Callable[[], datetime],
) -> list[Finding]:
    """Restart `host` when `options` say so and the window allows, then verify (see module
    docstring). `engine` is the runner's Engine (`session(host, check_mode=)`, `verify(...)`);
    `session` the host's open apply session. Raises remoting errors from the verify gather only."""
    findings = list(applied)
    options = options_for(options, host)
    state: RebootState | None = None
    if options.policy != "never":
        try:
            state = read_reboot_state(session)
        except RemotingError:
            state = None  # the decision then rests on the installers' exit codes
    reason = reboot_reason(options.policy, findings, state)
    if reason is None:
        verified = engine.verify(session, host, findings)
        if options.policy == "never":
            return note_not_rebooted(verified, "--reboot never (restart the host, then run check)")
        return verified
    if window is not None and not window.can_start(clock(), options.budget_s):
        verified = engine.verify(session, host, findings)
        return note_not_rebooted(verified, f"the change window {window} does not leave {options.budget_s:g} s "
                                           f"for a restart (pre-reboot delay {options.pre_reboot_delay} s + timeout "
                                           f"{options.timeout_s:g} s + post-reboot delay {options.post_reboot_delay} s)")

    def probe() -> RebootState | None:
        with engine.session(host, check_mode=True) as s:
            return read_reboot_state(s)

    close = getattr(session, "close", None)
    record, done = reboot_and_wait(session, probe, host.name, journal, options,
                                   state.last_boot if state is not None else None, clock=clock,
                                   close=close if callable(close) else None)
    findings = attach_reboot(findings, done, reason)
    if record.outcome != "success":
        return findings
    with engine.session(host, check_mode=True) as fresh:
        return engine.verify(fresh, host, findings)
