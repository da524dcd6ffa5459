"""Restarting a host inside the change window: the options, the decision, and the journalled
restart-and-wait sequence (no knowledge of runs, stores or the CLI).

The sequence follows Ansible's `win_reboot` (docs: "Reboot a Windows machine, wait for it to go
down, come back up, and respond to commands"; ansible.windows `plugin_utils/_reboot.py` reads
the boot time before the restart and treats the host as back once a read of it differs):

1. `journal.intent` (committed before anything is sent), then the agent's mutating op
   `system.reboot` = `shutdown.exe /r /t <pre_reboot_delay> /c "<message>" /d p:2:17`
   (remoting/PROTOCOL.md). Check mode refuses it in remoting like every mutating op.
2. Poll with fresh sessions every `poll_s`: a refused/failed connection marks the host `down`
   (first time seen); an answer whose `LastBootUpTime` differs from the one before marks it
   `up`. Bounded by `pre_reboot_delay + timeout_s` from the request.
3. Once back, wait `post_reboot_delay` seconds (win_reboot's option: "Seconds to wait after
   the reboot command was successful before attempting to validate the system rebooted
   successfully. This is useful if you want wait for something to settle despite your
   connection already working"; kbfix counts it from the host being back, as win_reboot 2.4
   documented it, so a slow restart does not eat the settling time), then the readiness check,
   win_reboot's `test_command`: a fresh session must run the agent again (PowerShell starts,
   the logon works) and still report the new boot time; a host that restarted once more in the
   meantime (servicing that needs two restarts) is waited for again. Bounded, with the wait,
   by `pre_reboot_delay + timeout_s + post_reboot_delay` from the request.
4. `journal.result`: `success` (down/up/ready times, old/new boot time) or `failed` ("did not
   come back within N s"). A lost answer to `system.reboot` is not re-sent: the wait decides.

Defaults are win_reboot's: pre_reboot_delay 2 s, reboot_timeout 600 s, post_reboot_delay 0 s,
msg "Reboot initiated by …". The message is limited to what shutdown.exe accepts on Server 2003
(127 characters). An arbitrary test_command is not offered: the agent runs only its own ops
(arguments are data, never PowerShell source), and its answering is the readiness test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from playbooks.model import ExecutedAction, Finding, PlannedAction, Status, SystemRebootOp, utc_now
from playbooks.reboot_facts import REBOOT_ACTION_ID, RebootState, reboot_state_from_response, reboot_state_op
from remoting.agent_protocol import op
from remoting.errors import OutcomeUnknownError, RemotingError

RebootPolicy = Literal["never", "if-needed", "always"]
REBOOT_POLICIES: tuple[str, ...] = ("never", "if-needed", "always")
DEFAULT_MESSAGE = "Reboot initiated by kbfix"


class RebootOptionError(ValueError):
    """A reboot option out of range; the message names the option."""


@dataclass(frozen=True)
class RebootOptions:
    """How apply restarts hosts. policy: `never` (default), `if-needed` (an installer answered
    reboot_required or Windows reports a restart pending), `always` (every host that had work);
    timeout_s: seconds the host has to answer again with a new boot time (win_reboot's
    reboot_timeout, default 600); message: shutdown.exe /c (≤127 printable chars, no `"`);
    pre_reboot_delay: shutdown.exe /t seconds (0-600, default 2); post_reboot_delay: seconds to
    let the host settle once it is back, before the readiness check and verify (0-3600, default 0);
    poll_s: seconds between probes. Raises RebootOptionError when out of range."""

    policy: RebootPolicy = "never"
    timeout_s: float = 600.0
    message: str = DEFAULT_MESSAGE
    pre_reboot_delay: int = 2
    poll_s: float = 2.0
    post_reboot_delay: int = 0

    def __post_init__(self) -> None:
        if self.policy not in REBOOT_POLICIES:
            raise RebootOptionError(f"reboot: {self.policy!r} is not one of {', '.join(REBOOT_POLICIES)}")
        if not 0 < self.timeout_s <= 86400:
            raise RebootOptionError(f"reboot timeout: {self.timeout_s:g} s is not in 1..86400")
        if not 0 <= self.pre_reboot_delay <= 600:
            raise RebootOptionError(f"pre_reboot_delay: {self.pre_reboot_delay} s is not in 0..600 (shutdown.exe /t on Server 2003)")
        if len(self.message) > 127 or re.search(r'["\x00-\x1f\x7f]', self.message) or not self.message.strip():
            raise RebootOptionError("reboot message: 1 to 127 printable characters without a double quote "
                                    "(shutdown.exe /c on Server 2003)")
        check_post_reboot_delay(self.post_reboot_delay)
        if not 0 < self.poll_s <= 60:
            raise RebootOptionError(f"reboot poll interval: {self.poll_s:g} s is not in (0, 60]")

    @property
    def budget_s(self) -> float:
        """The seconds a restart may take, for window planning: pre-reboot delay + timeout +
        post-reboot delay."""
        return float(self.pre_reboot_delay) + self.timeout_s + float(self.post_reboot_delay)

    def recorded(self) -> dict[str, object]:
        """The options as the run records them (RunOptions.recorded["reboot"]; nothing secret in them)."""
        return {"policy": self.policy, "timeout": self.timeout_s, "pre_reboot_delay": self.pre_reboot_delay,
                "message": self.message, "post_reboot_delay": self.post_reboot_delay}


#: The longest post_reboot_delay accepted (seconds): an hour of settling is already a change-window matter.
MAX_POST_REBOOT_DELAY = 3600
#: The inventory variable that sets a host's own post_reboot_delay (a slow site server), over the run's.
POST_REBOOT_DELAY_VAR = "kbfix_post_reboot_delay"


def check_post_reboot_delay(value: object, where: str = "post_reboot_delay") -> int:
    """`value` as whole seconds in 0..MAX_POST_REBOOT_DELAY (an int, or a string of digits as INI
    inventories give it). Raises RebootOptionError naming `where`."""
    seconds = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_POST_REBOOT_DELAY:
        raise RebootOptionError(f"{where}: {value!r} is not whole seconds in 0..{MAX_POST_REBOOT_DELAY}")
    return seconds


class RebootSettings(BaseModel):
    """Reboot settings as a config file or a plan spells them (every field optional; unknown
    keys refused): policy, timeout (s), message, pre_reboot_delay (s), post_reboot_delay (s)."""

    model_config = ConfigDict(extra="forbid")

    policy: RebootPolicy | None = None
    timeout: float | None = None
    message: str | None = None
    pre_reboot_delay: int | None = None
    post_reboot_delay: int | None = None


def resolve_reboot_options(*layers: RebootSettings | None, poll_s: float | None = None) -> RebootOptions:
    """RebootOptions from settings layers, first given value wins (CLI, then plan, then config),
    defaults for the rest. poll_s None: timeout/50 within [0.2, 2] s (short timeouts poll more
    often). Raises RebootOptionError for a value out of range."""

    def pick(name: str, default: object) -> object:
        for layer in layers:
            v = getattr(layer, name, None) if layer is not None else None
            if v is not None:
                return v
        return default

    timeout = float(pick("timeout", 600.0))  # type: ignore[arg-type]
    if poll_s is None:
        poll_s = min(2.0, max(0.2, timeout / 50))
    return RebootOptions(policy=pick("policy", "never"), timeout_s=timeout,  # type: ignore[arg-type]
                         message=str(pick("message", DEFAULT_MESSAGE)),
                         pre_reboot_delay=int(pick("pre_reboot_delay", 2)), poll_s=poll_s,  # type: ignore[call-overload]
                         post_reboot_delay=int(pick("post_reboot_delay", 0)))  # type: ignore[call-overload]


class RebootRecord(BaseModel):
    """One restart as the report shows it: requested/down/up/ready times (UTC; down None when no
    refused connection was seen; ready: the readiness check after post_reboot_delay passed),
    boot times before/after, outcome (`success`, `failed`,
    `unknown`), duration in seconds (request → up, or → giving up) and a detail sentence."""

    requested: datetime
    down: datetime | None = None
    up: datetime | None = None
    ready: datetime | None = None
    boot_before: datetime | None = None
    boot_after: datetime | None = None
    outcome: str = "unknown"
    duration_s: float = 0.0
    detail: str = ""


class Journal(Protocol):
    """The audit store's side (the same interface playbooks.execute.Journal has)."""

    def intent(self, host: str, action: PlannedAction) -> None:
        """Record, durably, that `action` is about to be sent to `host`."""
        ...

    def result(self, host: str, action: PlannedAction, executed: ExecutedAction) -> None:
        """Record what happened to `action` on `host`."""
        ...


class Session(Protocol):
    """What the sequence needs of `remoting.session.AgentSession`."""

    def run(self, ops: Sequence[object]) -> object:
        """Send one agent request (raises remoting errors)."""
        ...


def reboot_reason(policy: RebootPolicy, findings: Sequence[Finding], state: RebootState | None) -> str | None:
    """Why this host should restart now, or None. `never`: None. `if-needed`: an installer
    answered reboot_required, or Windows reports a restart pending (`state`). `always`: any
    planned or executed action on the host, or a pending restart."""
    if policy == "never":
        return None
    asked = [e for f in findings for e in f.executed if e.outcome == "reboot_required"]
    if asked:
        return f"an installer asked for a restart (exit code {asked[0].exit_code})"
    if state is not None and state.pending:
        return f"Windows reports a restart pending: {state.describe()}"
    if policy == "always" and any(f.executed or f.planned for f in findings):
        return "--reboot always"
    return None


def reboot_action(options: RebootOptions) -> PlannedAction:
    """The journalled restart action (id `reboot`, kind `reboot`, advisory `host`)."""
    return PlannedAction(
        id=REBOOT_ACTION_ID, advisory="host", kind="reboot",
        description=f"restart Windows (shutdown.exe /r /t {options.pre_reboot_delay}) and wait up to "
                    f"{options.timeout_s:g} s for a new boot time",
        ops=[SystemRebootOp(delay=str(options.pre_reboot_delay), message=options.message)],
        estimated_seconds=options.budget_s, reversible=False)


def read_reboot_state(session: Session) -> RebootState | None:
    """One read-only request: the pending indicators and boot time now. Raises remoting errors."""
    return reboot_state_from_response(session.run([reboot_state_op()]))


def reboot_and_wait(
    session: Session,
    probe: Callable[[], RebootState | None],
    host: str,
    journal: Journal,
    options: RebootOptions,
    boot_before: datetime | None,
    *,
    clock: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    close: Callable[[], None] | None = None,
) -> tuple[RebootRecord, ExecutedAction]:
    """Restart `host` through `session` and wait (see module docstring). `probe()` opens a
    fresh read-only session and returns the reboot state (raises RemotingError while the host is
    down); `boot_before` is the boot time read before (the op's own answer wins when it has one);
    `close()` drops the old session once the request is answered (its shell dies with Windows).
    Returns the record and the ExecutedAction journalled as the result. Never raises remoting
    errors: a failed request or a host that never comes back is outcome `failed`."""
    action = reboot_action(options)
    journal.intent(host, action)
    requested = clock()
    start = monotonic()
    record = RebootRecord(requested=requested, boot_before=boot_before)
    try:
        resp = session.run([op(REBOOT_ACTION_ID, "system.reboot", delay=str(options.pre_reboot_delay),
                               message=options.message)])
        r = next((x for x in getattr(resp, "results", ()) if x.id == REBOOT_ACTION_ID), None)
        if r is None or not r.ok:
            e = getattr(r, "error", None)
            why = f"{e.kind}: {e.message}" if e else "no answer for the op"
            return _finish(journal, host, action, record, "failed", f"restart not requested: {why}", clock, start, monotonic)
        raw = (r.data or {}).get("last_boot")
        if isinstance(raw, str):
            record.boot_before = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except OutcomeUnknownError:
        pass  # the answer was lost: the restart may be under way; never re-sent, the wait decides
    except RemotingError as exc:
        return _finish(journal, host, action, record, "failed", f"restart not requested: {exc}", clock, start, monotonic)
    if close is not None:
        close()
    deadline = start + options.budget_s
    while True:
        sleep(options.poll_s)
        try:
            state = probe()
        except RemotingError:
            if record.down is None:
                record.down = clock()
            state = None
        # Back = a new boot time; without a boot time from before, a refused connection seen first.
        back = state is not None and state.last_boot is not None and (
            state.last_boot != record.boot_before if record.boot_before is not None else record.down is not None)
        if back and state is not None:
            record.up = clock()
            record.boot_after = state.last_boot
            return _settle(probe, journal, host, action, record, options, deadline,
                           clock=clock, start=start, monotonic=monotonic, sleep=sleep)
        if monotonic() >= deadline:
            seen = (f"down since {record.down.isoformat()}" if record.down
                    else "it never stopped answering with the old boot time")
            return _finish(journal, host, action, record, "failed",
                           f"the host did not come back within {options.budget_s:g} s of the restart request ({seen})",
                           clock, start, monotonic)


def _settle(probe: Callable[[], RebootState | None], journal: Journal, host: str, action: PlannedAction,
            record: RebootRecord, options: RebootOptions, deadline: float, *, clock: Callable[[], datetime],
            start: float, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> tuple[RebootRecord, ExecutedAction]:
    """The host is back: wait post_reboot_delay, then the readiness check (see module docstring).
    With no delay the answer that showed the new boot time is the readiness check."""
    if options.post_reboot_delay <= 0:
        record.ready = record.up
        return _finish(journal, host, action, record, "success", "", clock, start, monotonic)
    sleep(float(options.post_reboot_delay))
    while True:
        try:
            state = probe()
        except RemotingError:
            state = None  # restarting once more, or not ready to take a logon yet
        if state is not None and state.last_boot is not None and state.last_boot == record.boot_after:
            record.ready = clock()
            return _finish(journal, host, action, record, "success", "", clock, start, monotonic)
        if state is not None and state.last_boot is not None and monotonic() < deadline:
            # It restarted again while settling (servicing that needs two restarts): settle again.
            record.boot_after = state.last_boot
            record.up = clock()
            sleep(float(options.post_reboot_delay))
            continue
        if monotonic() >= deadline:
            return _finish(journal, host, action, record, "failed",
                           f"the host came back at {record.up.isoformat() if record.up else '?'} but did not answer "
                           f"again after the post-reboot delay of {options.post_reboot_delay} s (readiness check) "
                           f"within {options.budget_s:g} s of the restart request", clock, start, monotonic)
        sleep(options.poll_s)


def _finish(journal: Journal, host: str, action: PlannedAction, record: RebootRecord, outcome: str, why: str,
            clock: Callable[[], datetime], start: float, monotonic: Callable[[], float]) -> tuple[RebootRecord, ExecutedAction]:
    record.outcome = outcome
    record.duration_s = round(monotonic() - start, 3)
    if outcome == "success":
        record.detail = (f"restart requested {record.requested.isoformat()}, down "
                         f"{record.down.isoformat() if record.down else '(not seen)'}, up "
                         f"{record.up.isoformat() if record.up else '?'}"
                         + (f", ready {record.ready.isoformat()}" if record.ready and record.ready != record.up else "")
                         + f", {record.duration_s:g} s; boot time "
                         f"{record.boot_before.isoformat() if record.boot_before else '?'} → "
                         f"{record.boot_after.isoformat() if record.boot_after else '?'}")
    else:
        record.detail = why
    done = ExecutedAction(action_id=REBOOT_ACTION_ID, outcome=outcome, started=record.requested, ended=clock(),
                          detail=record.detail)
    journal.result(host, action, done)
    return record, done


def attach_reboot(findings: Sequence[Finding], done: ExecutedAction, reason: str) -> list[Finding]:
    """The findings with the restart recorded where it matters: appended to `executed` of every
    finding that executed actions or is `pending_reboot`, with a note; a failed restart makes
    those findings `failed` with the reason."""
    out = []
    for f in findings:
        if not (f.executed or f.status == Status.PENDING_REBOOT):
            out.append(f)
            continue
        upd: dict[str, object] = {"executed": [*f.executed, done], "notes": [*f.notes, f"restart ({reason}): {done.detail}"]}
        if done.outcome != "success":
            upd.update(status=Status.FAILED, reason=f"restart failed: {done.detail}")
        out.append(f.model_copy(update=upd))
    return out


def note_not_rebooted(findings: Sequence[Finding], why: str) -> list[Finding]:
    """The findings with a note (and, for `pending_reboot` ones, the reason) saying the host was
    not restarted and why (window too short, policy `never`)."""
    out = []
    for f in findings:
        if f.status == Status.PENDING_REBOOT or any(e.outcome == "reboot_required" for e in f.executed):
            out.append(f.model_copy(update={"notes": [*f.notes, f"not restarted: {why}"],
                                            "reason": f"{f.reason} Not restarted: {why}."}))
        else:
            out.append(f)
    return out
