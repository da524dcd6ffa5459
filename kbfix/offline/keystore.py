"""The controller's side of offline collection: the signing key and the record of each export.

Both live in the audit store's directory (`--state`), never in the export folder:

- `offline/key`: 32 random bytes (mode 0600), created by the first export. Each host's answer is
  signed with `answer_key(key, nonce, host)` = HMAC-SHA256(key, "kbfix-offline-answer|<nonce>|<host>"),
  which is the only key an exported script carries: a script can sign answers for its own host
  and export, and nothing else.
- `offline/exports/<nonce>.json`: when the export was made and, per host, the exact request
  document (base64) and the computer name the answer must come from.

An answer whose nonce has no record here was not exported by this controller ("foreign").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

KEY_BYTES = 32
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")


class OfflineStoreError(ValueError):
    """The controller's offline key or an export record cannot be read or written."""


def _offline_dir(state: Path) -> Path:
    return Path(state) / "offline"


def load_or_create_key(state: Path) -> bytes:
    """The controller's offline signing key (created, 0600, on first use). Raises OfflineStoreError."""
    path = _offline_dir(state) / "key"
    try:
        if path.exists():
            key = path.read_bytes()
            if len(key) != KEY_BYTES:
                raise OfflineStoreError(f"{path}: not a {KEY_BYTES}-byte kbfix offline key")
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError as exc:
        raise OfflineStoreError(f"{path}: {exc.strerror or exc}") from exc


def load_key(state: Path) -> bytes | None:
    """The key, or None when this controller never exported."""
    path = _offline_dir(state) / "key"
    return path.read_bytes() if path.is_file() else None


def answer_key(key: bytes, nonce: str, host: str) -> bytes:
    """The per-host, per-export key an exported script signs its answer with (32 bytes)."""
    return hmac.new(key, f"kbfix-offline-answer|{nonce}|{host}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class ExportedHost:
    """One host of an export: its request document and the computer name it must answer from."""

    host: str
    request: bytes
    computer_name: str

    @property
    def request_sha256(self) -> str:
        """sha256 hex of the request document (the script reports it in its answer)."""
        return hashlib.sha256(self.request).hexdigest()


@dataclass(frozen=True)
class ExportRecord:
    """One export: nonce (32 hex), creation time (UTC) and its hosts by name."""

    nonce: str
    created: datetime
    hosts: dict[str, ExportedHost]

    def to_json(self) -> dict[str, Any]:
        """The record as stored (`kbfix_offline_export: 1`, requests base64)."""
        return {"kbfix_offline_export": 1, "nonce": self.nonce, "created": self.created.isoformat(),
                "hosts": {h.host: {"request": base64.b64encode(h.request).decode("ascii"),
                                   "computer_name": h.computer_name} for h in self.hosts.values()}}


def save_export(state: Path, record: ExportRecord) -> Path:
    """Write the export record atomically. Raises OfflineStoreError."""
    folder = _offline_dir(state) / "exports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record.nonce}.json"
        fd, tmp = tempfile.mkstemp(prefix=".export.", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record.to_json(), fh, indent=1)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        raise OfflineStoreError(f"{folder}: {exc.strerror or exc}") from exc


def load_export(state: Path, nonce: str) -> ExportRecord | None:
    """The record of export `nonce`, or None when this controller has none. Raises
    OfflineStoreError for a record that exists but cannot be read."""
    if not _NONCE_RE.match(nonce):
        return None
    path = _offline_dir(state) / "exports" / f"{nonce}.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        hosts = {name: ExportedHost(name, base64.b64decode(h["request"]), str(h["computer_name"]))
                 for name, h in doc["hosts"].items()}
        return ExportRecord(doc["nonce"], datetime.fromisoformat(doc["created"]), hosts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OfflineStoreError(f"{path}: unreadable export record: {exc}") from exc
