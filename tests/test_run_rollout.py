"""Rollout: serial batches (Ansible semantics), max-fail, forks, per-site caps, deadlines, stop."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbfix.rollout import RolloutError, batch_failed, batches, parse_serial, run_concurrently


def test_serial_as_ansible() -> None:
    hosts = list(range(10))
    assert [len(b) for b in batches(hosts, parse_serial("1,50%,100%"))] == [1, 5, 4]
    assert [len(b) for b in batches(hosts, parse_serial("3"))] == [3, 3, 3, 1]
    assert [len(b) for b in batches(hosts, parse_serial("1,10%,20%"))] == [1, 1, 2, 2, 2, 2]
    assert [len(b) for b in batches(list(range(3)), parse_serial("10%"))] == [1, 1, 1]  # at least 1
    assert batches(hosts, parse_serial(None)) == [hosts]
    for bad in ("0", "-1", "x", "150%", "0%", "1,,2"):
        with pytest.raises(RolloutError):
            parse_serial(bad)


@given(n=st.integers(0, 200), spec=st.lists(st.one_of(st.integers(1, 50).map(str),
                                                      st.integers(1, 100).map(lambda p: f"{p}%")), min_size=1, max_size=5))
def test_batches_partition_in_order(n: int, spec: list[str]) -> None:
    items = list(range(n))
    got = batches(items, parse_serial(",".join(spec)))
    assert [x for b in got for x in b] == items
    assert all(b for b in got)


def test_max_fail_percent_exceeds_semantics() -> None:
    assert not batch_failed(1, 2, 50)  # 50% is not above 50%
    assert batch_failed(2, 3, 50)
    assert batch_failed(1, 10, 0)
    assert not batch_failed(5, 5, 100)
    assert not batch_failed(5, 5, None)


def _callbacks() -> dict:
    return {
        "on_error": lambda item, exc: ("error", item, type(exc).__name__),
        "on_timeout": lambda item: ("timeout", item),
        "on_skip": lambda item: ("skipped", item),
    }


def test_forks_are_parallel_and_results_in_order() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> tuple[str, int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.1)
        with lock:
            active -= 1
        return ("ok", i)

    t0 = time.monotonic()
    out = run_concurrently(list(range(12)), work, forks=4, **_callbacks())
    elapsed = time.monotonic() - t0
    assert out == [("ok", i) for i in range(12)]
    assert peak == 4
    assert elapsed < 0.6  # 3 waves of 0.1 s, not 12 × 0.1 s


def test_max_per_site_caps_concurrency() -> None:
    active: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()

    def work(item: tuple[str, int]) -> str:
        site = item[0]
        with lock:
            active[site] += 1
            peak[site] = max(peak[site], active[site])
        time.sleep(0.05)
        with lock:
            active[site] -= 1
        return "ok"

    items = [("a", i) for i in range(6)] + [("b", i) for i in range(2)]
    out = run_concurrently(items, work, forks=8, site_of=lambda it: it[0], max_per_site=2, **_callbacks())
    assert out == ["ok"] * 8
    assert peak == {"a": 2, "b": 2}


def test_dead_host_does_not_stall_others_and_errors_are_values() -> None:
    release = threading.Event()

    def work(i: int) -> tuple[str, int]:
        if i == 0:
            release.wait(5)  # a hung host
        if i == 1:
            raise ConnectionResetError("boom")
        return ("ok", i)

    t0 = time.monotonic()
    out = run_concurrently(list(range(6)), work, forks=2, deadline_of=lambda i: 0.3 if i == 0 else None,
                           **_callbacks())
    release.set()
    assert time.monotonic() - t0 < 1.5
    assert out[0] == ("timeout", 0)
    assert out[1] == ("error", 1, "ConnectionResetError")
    assert out[2:] == [("ok", i) for i in range(2, 6)]


def test_stop_skips_unstarted_and_lets_running_finish_within_grace() -> None:
    stop = threading.Event()
    started: list[int] = []

    def work(i: int) -> tuple[str, int]:
        started.append(i)
        if i == 0:
            stop.set()
        time.sleep(0.2 if i < 2 else 0)
        return ("ok", i)

    out = run_concurrently(list(range(5)), work, forks=2, should_stop=stop.is_set, grace_seconds=2, **_callbacks())
    assert out[:2] == [("ok", 0), ("ok", 1)]  # running ones finished
    assert out[2:] == [("skipped", i) for i in range(2, 5)]
    assert sorted(started) == [0, 1]


def test_grace_expiry_and_gate() -> None:
    stop = threading.Event()

    def work(i: int) -> tuple[str, int]:
        stop.set()
        time.sleep(2)
        return ("ok", i)

    t0 = time.monotonic()
    out = run_concurrently([0, 1], work, forks=1, should_stop=stop.is_set, grace_seconds=0.2, **_callbacks())
    assert out == [("timeout", 0), ("skipped", 1)]
    assert time.monotonic() - t0 < 1.0
    gated = run_concurrently([0, 1, 2], lambda i: ("ok", i), forks=2,
                             gate=lambda i: ("skipped", i) if i == 1 else None, **_callbacks())
    assert gated == [("ok", 0), ("skipped", 1), ("ok", 2)]


@settings(max_examples=25, deadline=None)
@given(sites=st.lists(st.sampled_from("abc"), min_size=0, max_size=25), forks=st.integers(1, 6),
       cap=st.one_of(st.none(), st.integers(1, 3)))
def test_scheduler_respects_forks_and_site_caps(sites: list[str], forks: int, cap: int | None) -> None:
    active: Counter[str] = Counter()
    peak_total = 0
    peak_site: Counter[str] = Counter()
    lock = threading.Lock()

    def work(item: tuple[int, str]) -> int:
        nonlocal peak_total
        with lock:
            active[item[1]] += 1
            peak_total = max(peak_total, sum(active.values()))
            peak_site[item[1]] = max(peak_site[item[1]], active[item[1]])
        time.sleep(0.002)
        with lock:
            active[item[1]] -= 1
        return item[0]

    items = list(enumerate(sites))
    out = run_concurrently(items, work, forks=forks, site_of=lambda it: it[1], max_per_site=cap, poll_seconds=0.005,
                           **_callbacks())
    assert out == list(range(len(items)))
    assert peak_total <= forks
    assert all(v <= (cap or forks) for v in peak_site.values())


def test_workers_are_reused_and_a_stuck_one_is_replaced() -> None:
    stuck = threading.Event()
    names: dict[int, str] = {}
    lock = threading.Lock()
    active = [0, 0]  # now, most at once (besides the stuck item)

    def work(i: int) -> str:
        names[i] = threading.current_thread().name
        if i == 0:
            stuck.wait(10)
            return "late"
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.03)
        with lock:
            active[0] -= 1
        return f"ok{i}"

    out = run_concurrently(list(range(30)), work, forks=3, deadline_of=lambda i: 0.05 if i == 0 else None,
                           on_error=lambda i, e: "error", on_timeout=lambda i: "timeout", on_skip=lambda i: "skip",
                           poll_seconds=0.01)
    assert out == ["timeout", *(f"ok{i}" for i in range(1, 30))]
    assert len(set(names.values())) <= 4  # 3 workers, and one more in place of the stuck one
    assert active[1] == 3  # once item 0 timed out, three others ran at once: forks still held
    stuck.set()
    end = time.monotonic() + 5
    while any(t.name.startswith("kbfix-fork-") for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("kbfix-fork-")]  # every worker stopped
