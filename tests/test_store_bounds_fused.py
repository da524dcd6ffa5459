"""`kbfix.store.bounds.redacted_bounded` (one walk, issue 19) gives exactly what
`bound_strings(redact(x))` gives: secret keys, str keys, cut strings, datetimes, paths, sets (property)."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kbfix.store.bounds import bound_strings, redacted_bounded
from remoting.redaction import redact

_KEYS = st.one_of(st.text(max_size=12), st.integers(),
                  st.sampled_from(["password", "api_key", "ansible_ssh_private_key_file", "token_env", "Secret"]))
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                  st.datetimes(timezones=st.just(timezone.utc)), st.builds(Path, st.text(max_size=5)))
_TREE = st.recursive(_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.tuples(c, c), st.dictionaries(_KEYS, c, max_size=4),
                                                 st.frozensets(st.integers(), max_size=3)), max_leaves=30)


@settings(max_examples=500)
@given(_TREE, st.integers(min_value=0, max_value=20))
def test_redacted_bounded_is_bound_strings_of_redact(value: object, limit: int) -> None:
    assert redacted_bounded(value, limit) == bound_strings(redact(value), limit)


def _reference_bound(value: object, limit: int) -> object:
    """The rule stated plainly (written apart from bound_strings, so the property compares two statements of it)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}…[{len(value) - limit} more characters not stored]"
    if isinstance(value, dict):
        return {k: _reference_bound(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reference_bound(v, limit) for v in value]
    return value


@settings(max_examples=500)
@given(_TREE, st.integers(min_value=0, max_value=20))
def test_bound_strings_follows_the_plain_rule(value: object, limit: int) -> None:
    assert bound_strings(value, limit) == _reference_bound(value, limit)
    assert redacted_bounded(value, limit) == _reference_bound(redact(value), limit)
