"""Property tests for the playbooks' parsers: versions, log timestamps, the condition sandbox,
and the WSUS hierarchy order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks import HostContext, upstream_waves
from playbooks.conditions import ConditionError, evaluate
from playbooks.logformats import parse_timestamp
from playbooks.version import Version, VersionRange

parts = st.tuples(*[st.integers(0, 70000)] * 4)


@given(parts, parts)
def test_version_orders_as_integer_tuples(a, b):
    va, vb = Version(a), Version(b)
    assert (va < vb) == (a < b) and (va == vb) == (a == b)
    assert Version.parse(str(va)) == va
    assert VersionRange.parse(f">={va}").contains(vb) == (b >= a)


@given(parts)
def test_three_part_comparison_ignores_revision(a):
    v = Version(a)
    assert VersionRange.parse(str(v.prefix(3)), 3).contains(Version((a[0], a[1], a[2], (a[3] + 1) % 9999)))


@settings(max_examples=200)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1)), st.integers(-720, 840))
def test_sms_trace_time_is_local_plus_bias(local, bias):
    local = local.replace(microsecond=(local.microsecond // 1000) * 1000)
    sign = "+" if bias >= 0 else "-"
    line = (f"Sync done  $$<SMS_WSUS_SYNC_MANAGER><{local:%m-%d-%Y %H:%M:%S}.{local.microsecond // 1000:03d}"
            f"{sign}{abs(bias)}><thread=12 (0xC)>")
    assert parse_timestamp(line, "sms_trace") == (local + timedelta(minutes=bias)).replace(tzinfo=timezone.utc)


@given(st.text(max_size=200))
def test_timestamp_parsers_never_raise(text):
    for fmt in ("sms_trace", "wsus_softwaredistribution", "windowsupdate"):
        parse_timestamp(text, fmt)


@settings(max_examples=300)
@given(st.text(alphabet="abcxyz_.()[]'\"0123456789 +-*/<>=!|~{}%", max_size=40))
def test_sandbox_only_ever_raises_condition_error(expr):
    try:
        evaluate(expr, {"facts": {"a": {"b": 1}}, "roles": []})
    except ConditionError:
        pass


def test_sandbox_blocks_python_internals():
    assert evaluate("facts.__class__.__mro__", {"facts": {}}) is None
    with pytest.raises(ConditionError):
        evaluate("().__class__.__base__.__subclasses__()", {})


def test_upstream_first():
    hosts = [HostContext("R2", vars={"wsus_upstream": "r1"}), HostContext("R1", vars={"wsus_upstream": "UP"}),
             HostContext("UP"), HostContext("X", vars={"wsus_upstream": "elsewhere"})]
    assert upstream_waves(hosts) == [["UP", "X"], ["R1"], ["R2"]]
    with pytest.raises(ValueError, match="cycle"):
        upstream_waves([HostContext("A", vars={"wsus_upstream": "B"}), HostContext("B", vars={"wsus_upstream": "A"})])
