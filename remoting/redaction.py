"""The one rule for secret-looking keys, and redaction by it (stores, reports, inventories).

It lives in the lowest layer (remoting: inventory, playbooks and kbfix import it; it imports
nothing of theirs). The rule is the union of the three kbfix 0.1 had: a key is secret when its
name contains `pass` (password, passwd, passphrase, ansible_password, …), `secret`, `token`,
`credential`, `api_key`/`apikey`/`api-key` or `private_key`, case-insensitively — unless it
ends in `_env`, `_keyring` or `_file`: such a key names WHERE a secret is (an environment
variable, a keyring entry, a file path such as `ansible_ssh_private_key_file`), not the secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

REDACTED = "***redacted***"
REFERENCE_SUFFIXES = ("_env", "_keyring", "_file")
_PLAIN = frozenset({str, int, float, bool, type(None)})
SECRET_KEY = re.compile(r"pass|secret|token|credential|api[_-]?key|private[_-]?key", re.IGNORECASE)


@lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """True when a key with this name holds a secret (see the module docstring)."""
    return bool(SECRET_KEY.search(name)) and not name.lower().endswith(REFERENCE_SUFFIXES)


def redact(value: Any, *, time_text: Callable[[datetime], Any] = datetime.isoformat) -> Any:
    """A JSON-ready deep copy of `value` with the values of secret-looking keys replaced by
    `REDACTED`. Mappings → dicts with str keys, sequences and sets → lists, datetimes →
    `time_text(value)` (ISO 8601 by default), paths → str, other objects → their text (a
    `remoting.endpoint.Secret` renders as ***)."""
    kind = type(value)
    if kind in _PLAIN:  # the common leaves first: exact types skip the ABC checks below
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): (REDACTED if is_secret_key(str(k)) else redact(v, time_text=time_text)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v, time_text=time_text) for v in value]
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
