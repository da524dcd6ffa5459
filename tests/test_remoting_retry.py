"""remoting.retry.call_with_retry: the policy's semantics whether the first attempt succeeds
(run directly) or fails (tenacity takes over with that outcome as its first attempt)."""

from __future__ import annotations

import time

import pytest

from remoting.errors import ConfigurationError, RemotingError, UnreachableError
from remoting.retry import NO_RETRY, RetryPolicy, call_with_retry

QUICK = RetryPolicy(attempts=3, wait_min_s=0.05, wait_max_s=0.08)


def transient(n: int) -> UnreachableError:
    err = UnreachableError(f"refused #{n}", host="H")
    err.transient = True
    return err


class Flaky:
    """Fails with a transient error `failures` times, then returns the number of calls."""

    def __init__(self, failures: int, error: type[RemotingError] | None = None) -> None:
        self.failures, self.calls, self.error = failures, 0, error

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"#{self.calls}", host="H") if self.error else transient(self.calls)
        return self.calls


def test_a_first_success_is_returned_without_retry_hooks() -> None:
    seen: list[BaseException] = []
    assert call_with_retry(Flaky(0), QUICK, before_retry=seen.append) == 1
    assert seen == []


def test_transient_failures_are_retried_with_waits_and_hooks() -> None:
    seen: list[BaseException] = []
    fn = Flaky(2)
    t0 = time.monotonic()
    assert call_with_retry(fn, QUICK, before_retry=seen.append) == 3
    assert time.monotonic() - t0 >= 0.05 + 0.08 - 0.01  # 0.05 then 0.1 capped at 0.08
    assert [str(e) for e in seen] == [str(transient(1)), str(transient(2))]


def test_attempts_run_out_with_the_last_error() -> None:
    seen: list[BaseException] = []
    fn = Flaky(5)
    with pytest.raises(UnreachableError, match="#3"):
        call_with_retry(fn, QUICK, before_retry=seen.append)
    assert fn.calls == 3 and len(seen) == 2


@pytest.mark.parametrize("policy", [QUICK, NO_RETRY])
def test_permanent_errors_and_no_retry_policies_raise_the_first_error(policy: RetryPolicy) -> None:
    fn = Flaky(1, ConfigurationError)
    with pytest.raises(ConfigurationError, match="#1"):
        call_with_retry(fn, policy)
    assert fn.calls == 1
    once = Flaky(1)
    with pytest.raises(UnreachableError, match="#1"):
        call_with_retry(once, NO_RETRY)
    assert once.calls == 1
