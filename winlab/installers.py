"""What an emulated installer does when it runs: a fixture's `installers:` entries, prepared.

`InstallerBehaviour` (match on the package file name, exit code, simulated seconds, the text it
writes to a log when asked) and `Changes` (its `sets:`: files, registry values, products,
patch registrations, services) are runtime values: `winlab.templates` builds them from the
fixture, `winlab.emulate_mutations` applies them. This module imports only the host state.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timezone

from winlab.hoststate import FileEntry, HostState, PatchSpec, ProductSpec, RegData, RegType


@dataclass(frozen=True)
class Changes:
    """A prepared state change (an installer's `sets:`): file entries, registry values (key, name,
    data, type), Uninstall products to add and patterns to remove, Windows Installer patch
    registrations, services (name, status, start mode)."""

    files: tuple[FileEntry, ...] = ()
    values: tuple[tuple[str, str, RegData, RegType | None], ...] = ()
    products: tuple[ProductSpec, ...] = ()
    remove_products: tuple[str, ...] = ()
    patches: tuple[PatchSpec, ...] = ()
    services: tuple[tuple[str, str, str | None], ...] = ()

    def apply(self, state: HostState) -> list[str]:
        """Apply to `state` (paths and keys are env-expanded first). Returns short descriptions."""
        done: list[str] = []
        now = datetime.now(timezone.utc)
        with state.lock:
            for fe in self.files:
                path = state.expand(fe.path)
                state.put_file(FileEntry(path, fe.content, fe.version, fe.version_string, fe.product_version, now))
                done.append(f"file {path}" + (f" version {fe.version}" if fe.version else ""))
            for key, name, data, type_ in self.values:
                state.set_value(state.expand(key), name, data, type_)
                done.append(f"registry {key}\\{name}")
            for pattern in self.remove_products:
                state.remove_products(pattern)
                done.append(f"removed products {pattern}")
            for p in self.products:
                state.add_product(p.name, p.version, p.publisher, p.code, p.view, p.install_date)
                done.append(f"product {p.name}")
            for pa in self.patches:
                state.add_patch(pa)
                done.append(f"patch {pa.name}")
            for name, status, mode in self.services:
                state.set_service(name, status, mode)
                done.append(f"service {name} {status}")
        return done


@dataclass(frozen=True)
class InstallerBehaviour:
    """One `installers:` entry, prepared: match (wildcard on the file name), exit code, simulated
    seconds, state changes, and the text written to the installer's log when the command line
    asks for one (msiexec `/l*v <log>`, or the manifest's own log switch for an .exe); `at_boot`:
    changes Windows applies at the next boot (files replaced in use: MoveFileEx renames)."""

    match: str
    exit_code: int
    seconds: float
    changes: Changes
    log: str | None
    at_boot: Changes | None = None  # reboot (issue 21): what Windows applies at the next boot

    def matches(self, file_name: str) -> bool:
        """Case-insensitive wildcard match on the package's file name."""
        return fnmatch.fnmatchcase(file_name.lower(), self.match.lower())
