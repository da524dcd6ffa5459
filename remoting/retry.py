"""When remoting may try a request again, and how often: the one retry policy, built on tenacity.

Retries are allowed only where a repeat cannot change a host twice:

- opening the shell (WS-Man Create) after a refused/reset connection or an HTTP 5xx: no command
  has started yet;
- a whole agent run whose ops are all read-only, after the same transient faults.

A request that carried a mutating op is never retried; `remoting.session` raises
`OutcomeUnknownError` instead. Which errors are transient is decided where exceptions are mapped
(`RemotingError.transient`, set in `remoting.wsman_client`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from remoting.errors import RemotingError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most `attempts` tries in all (1 = no retry), waiting exponentially
    between `wait_min_s` and `wait_max_s` seconds (doubling from `wait_min_s`)."""

    attempts: int = 3
    wait_min_s: float = 0.2
    wait_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.wait_min_s < 0 or self.wait_max_s < self.wait_min_s:
            raise ValueError("RetryPolicy waits must satisfy 0 <= wait_min_s <= wait_max_s")


NO_RETRY = RetryPolicy(attempts=1)


def is_transient(exc: BaseException) -> bool:
    """True for a mapped remoting error that is safe to repeat (refused/reset connection, HTTP 5xx)."""
    return isinstance(exc, RemotingError) and exc.transient


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retry_if: Callable[[BaseException], bool] = is_transient,
    before_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call `fn` until it returns, retrying while `retry_if(exception)` holds and attempts remain.

    The last exception is re-raised unchanged when attempts run out or it is not retryable.
    `before_retry(exc)` runs before each new attempt (e.g. to clean up a half-finished command).

    The first attempt runs directly: building tenacity's Retrying and its call state costs ~30 us,
    twice per host, and almost every first attempt returns. When it raises a retryable error and
    attempts remain, tenacity takes over with that outcome as its first attempt (the same stop,
    wait, `before_retry` and re-raise as if it had made the call itself)."""
    try:
        return fn()
    except Exception as exc:
        if policy.attempts <= 1 or not retry_if(exc):
            raise
        first: BaseException | None = exc

    def attempt() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            try:
                raise failed
            finally:
                # No reference from this frame to the exception (whose traceback holds this
                # frame): the failed attempt's frames are freed when tenacity drops the
                # outcome, as when tenacity made the call, not at the next garbage collection.
                del failed
        return fn()

    def _before_sleep(state: tenacity.RetryCallState) -> None:
        if before_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                before_retry(exc)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.wait_min_s, min=policy.wait_min_s, max=policy.wait_max_s),
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=_before_sleep,
        reraise=True,
    )
    return retrying(attempt)
