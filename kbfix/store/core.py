"""What the store's mixins (host rows, journal, locks, evidence rows) may use of `AuditStore`: declared once."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from kbfix.store.diskguard import TxRecorder


class StoreCore:
    """Base of the `AuditStore` mixins. The attributes and methods below are provided by
    `AuditStore` itself; they are declared here only for the type checker."""

    if TYPE_CHECKING:  # provided by AuditStore
        path: Path | str
        _lock: threading.RLock
        _db: sa.Connection
        disk_full: bool

        @property
        def dialect(self) -> str: ...

        def _tx(self) -> AbstractContextManager[TxRecorder]: ...

        def _query(self, sql: str, params: Mapping[str, Any] | None = None, *, deferred: bool = True) -> list[dict[str, Any]]: ...

        def _in(self, name: str) -> str: ...

        def flush(self) -> None: ...
