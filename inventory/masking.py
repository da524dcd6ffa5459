"""Secret-looking inventory variables wrapped in `Secret` (one rule: `remoting.redaction.is_secret_key`),
so a password never prints from a host's or group's vars."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from remoting.endpoint import Secret
from remoting.redaction import is_secret_key


@lru_cache(maxsize=4096)
def is_secret_name(key: str) -> bool:
    """True for variable names whose values are credentials: the one rule,
    `remoting.redaction.is_secret_key`."""
    return is_secret_key(key)


def mask_secrets(value: Any, key: str = "") -> Any:
    """Wrap values under secret-looking keys (recursively) in Secret; dicts and lists are copied.

    A dict or list that appears several times in `value` (a YAML alias) is copied once per
    secret-ness of the key above it and shared in the result, as it was in the input: masking
    stays linear in the file, where copying every reference expanded an alias bomb to 10^9 nodes
    (issue 20 finding 5).
    """
    return _mask(value, key, {})


def _mask(value: Any, key: str, memo: dict[tuple[int, bool], Any]) -> Any:
    if isinstance(value, dict):
        # A dict's items are masked by their own keys: the key above does not matter.
        slot = (id(value), False)
        if slot not in memo:
            out: dict[Any, Any] = {}
            memo[slot] = out
            out.update((k, mask_item(str(k), v, memo)) for k, v in value.items())
        return memo[slot]
    if isinstance(value, list):
        slot = (id(value), is_secret_name(key))
        if slot not in memo:
            out_list: list[Any] = []
            memo[slot] = out_list
            out_list.extend(mask_item(key, v, memo) for v in value)
        return memo[slot]
    return value


def mask_item(key: str, value: Any, memo: dict[tuple[int, bool], Any]) -> Any:
    """One value under `key`, masked: a scalar under a secret-looking key becomes a Secret,
    containers are masked through `memo` (id, secret-ness → copy), other values come back as they are."""
    if isinstance(value, (dict, list)):
        return _mask(value, key, memo)
    if value is None or isinstance(value, Secret) or not is_secret_name(key):
        return value
    return Secret(str(value))

