"""What the store's mixins (journal, locks, evidence rows) may use of `AuditStore`: declared once."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any


class StoreCore:
    """Base of the `AuditStore` mixins. The attributes and methods below are provided by
    `AuditStore` itself; they are declared here only for the type checker."""

    if TYPE_CHECKING:  # provided by AuditStore
        path: Path
        _lock: threading.RLock
        _db: sqlite3.Connection
        disk_full: bool

        def _tx(self) -> AbstractContextManager[Any]: ...

        def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
