"""`kbfix offline export`: one signed, read-only collection script per host, and the
controller-side record that later verifies their answers (kbfix/offline/keystore.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import playbooks as pb
from kbfix.offline.keystore import ExportedHost, ExportRecord, answer_key, load_or_create_key, save_export
from kbfix.offline.script import HOST_RE, render_script, script_file_name
from remoting.agent_protocol import AgentRequest, encode_request
from remoting.errors import CheckModeViolation


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: its nonce, creation time and the script per host."""

    nonce: str
    created: datetime
    scripts: dict[str, Path]


def expected_computer_name(host: Any) -> str:
    """The computer name an answer for `host` must come from: the host variable
    `computer_name` when set, else the first DNS label of the inventory name, upper-case."""
    value = (getattr(host, "vars", None) or {}).get("computer_name")
    return str(value or host.name.split(".")[0]).upper()


def export_scripts(hosts: Sequence[Any], engine: Any, state: Path, out_dir: Path,
                   now: datetime | None = None) -> ExportResult:
    """Write `<host>.kbfix-offline.ps1` per host into `out_dir` and record the export in `state`.

    engine: a `kbfix.run.playbook_engine.PlaybookEngine` (its playbooks decide the probes, as for a check).
    Every name is checked and every request built before anything is written. Raises
    ValueError for a host name that cannot be embedded, CheckModeViolation if a probe would
    mutate (never: gather ops are read-only), OfflineStoreError/OSError for file problems.
    """
    created = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    nonce = secrets.token_hex(16)
    bad = [h.name for h in hosts if not HOST_RE.match(h.name)]
    if bad:
        raise ValueError(f"host name(s) {', '.join(map(repr, bad))} cannot be embedded in an offline script "
                         "(allowed: letters, digits, '_', '.', '-')")
    bad = [expected_computer_name(h) for h in hosts if not HOST_RE.match(expected_computer_name(h))]
    if bad:
        raise ValueError(f"computer name(s) {', '.join(map(repr, bad))} cannot be embedded in an offline script")
    if not hosts:
        raise ValueError("no hosts selected: nothing to export")
    requests: dict[str, bytes] = {}
    for h in hosts:
        ops = pb.gather_ops(engine.playbooks, engine.context(h))
        mutating = [o.id for o in ops if o.mutating]
        if mutating:
            raise CheckModeViolation(f"offline scripts are read-only: refusing op(s) {', '.join(mutating)}", host=h.name)
        requests[h.name] = encode_request(AgentRequest(tuple(ops), nonce=nonce))
    key = load_or_create_key(state)
    stamp = f"{created:%Y-%m-%dT%H:%M:%SZ}"
    texts = {h.name: render_script(h.name, nonce, stamp, answer_key(key, nonce, h.name), requests[h.name],
                                   computer=expected_computer_name(h))
             for h in hosts}
    record = ExportRecord(nonce, created, {h.name: ExportedHost(h.name, requests[h.name], expected_computer_name(h))
                                           for h in hosts})
    save_export(state, record)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts: dict[str, Path] = {}
    for name, text in texts.items():
        path = out_dir / script_file_name(name)
        # The script carries its host's answer key: readable by the operator only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii", newline="") as fh:
            fh.write(text)
        scripts[name] = path
    return ExportResult(nonce, created, scripts)
