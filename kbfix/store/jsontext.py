"""The JSON text the audit store writes and hashes, made faster without changing one character.

Two forms, both fixed by the stored rows and the hash chain:
- stored (`dumps_stored`): `json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)`,
  separators `, ` and `: ` (kbfix/store/rows.py `dumps_json`);
- canonical (`dumps_canonical`): the same with separators `,` and `:` (kbfix/store/chain.py row hashes).

Cost (issue 19): a host's facts, result and evidence are encoded, and then every stored row once
more for its hash; the json module's encoder was about half of the store's CPU per host. ujson
writes the same text about twice as fast for the values it is given here: only "plain" trees —
dict (str keys), list, str, int, bool and None, exact types (floats are written differently:
ujson `1e-7`, json `1e-07`; subclasses are left to json). Every code point, as string and key,
big integers and the key order were compared (tests/test_store_jsontext.py, exhaustively and by
property); a probe at import compares them again and leaves the json module alone in charge if
this ujson differs (or is missing). Anything ujson refuses (too deep, …) goes to json, which then
writes or raises exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_Dumps = Callable[..., str]

try:  # pragma: no branch - ujson is a dependency; without it the json module writes everything
    import ujson as _ujson_module
except ImportError:  # pragma: no cover
    _ujson: _Dumps | None = None
else:
    _ujson = _ujson_module.dumps

_STORED_SEPARATORS = (", ", ": ")
_CANONICAL_SEPARATORS = (",", ":")

#: Text whose encoding must agree before ujson is used: every ASCII control, quote, backslash,
#: slash (ujson escapes it unless told not to), DEL, Latin-1, line/paragraph separators, BOM,
#: the end of the BMP, an astral character, big and negative integers, non-ASCII keys out of order.
_PROBE: dict[str, Any] = {
    "zeta": "".join(map(chr, range(0x20))) + "\"\\/\x7f\x80\xa0é\u2028\u2029\ufeff\uffff\U0001f600",
    "\u00e9t\u00e9": [2**64, -(2**63) - 1, 0, -1, True, False, None, [], {}],
    "Alpha": {"\U0001f600": "", "\uffff": 1, "a": [{"b": "c"}]},
}


def _agrees() -> bool:
    if _ujson is None:
        return False
    try:
        return all(_ujson(_PROBE, sort_keys=True, ensure_ascii=False, escape_forward_slashes=False,
                          separators=sep) == json.dumps(_PROBE, sort_keys=True, ensure_ascii=False, separators=sep)
                   for sep in (_STORED_SEPARATORS, _CANONICAL_SEPARATORS))
    except Exception:  # an ujson that cannot write the probe is not used either
        return False


FAST = _agrees()
"""True when ujson writes the plain trees (see the module docstring)."""


def _fast(value: Any, separators: tuple[str, str]) -> str | None:
    assert _ujson is not None
    try:
        return _ujson(value, sort_keys=True, ensure_ascii=False, escape_forward_slashes=False, separators=separators)
    except Exception:  # too deep, too big, …: json decides (and raises as it always did)
        return None


def dumps_stored(value: Any, *, plain: bool = False) -> str:
    """`json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)`, the stored JSON text.
    plain: the caller knows `value` is a plain tree (dict with str keys, list, str, int, bool,
    None; exact types, kbfix.store.bounds.bounded_tree says so); then ujson may write it."""
    if plain and FAST:
        text = _fast(value, _STORED_SEPARATORS)
        if text is not None:
            return text
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def dumps_canonical(value: Any, *, plain: bool = False) -> str:
    """`json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`, the text a
    chain row hash covers; `plain` as for `dumps_stored`."""
    if plain and FAST:
        text = _fast(value, _CANONICAL_SEPARATORS)
        if text is not None:
            return text
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=_CANONICAL_SEPARATORS)


__all__ = ["FAST", "dumps_canonical", "dumps_stored"]
