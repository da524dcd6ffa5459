"""Installed products as a 64-bit process reads them: Uninstall entries and Windows Installer patches.

`list_products` is what the agent's `products.list` answers (and what the naive peer's
`Get-ItemProperty ...\\Uninstall\\*` sees of the native view); `list_patches` is what
`products.patches` answers from the patch registrations under
`HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Installer\\UserData\\S-1-5-18\\Products\\
<packed product code>\\Patches\\<packed patch code>` (values DisplayName and State, the ones
`Installer.PatchesEx` / `Patch.PatchProperty` report: MS docs
https://learn.microsoft.com/windows/win32/msi/patch-patchproperty). Both walk `HostState`'s one
Uninstall/patch walker.
"""

from __future__ import annotations

import re
from typing import Any

from winlab.hoststate import HostState


def wildcard(pattern: str) -> re.Pattern[str]:
    """PowerShell `-like` wildcard (`*`, `?`; brackets are literal, as the agent escapes them)
    as a case-insensitive regex."""
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$",
                      re.I | re.S)


def list_products(state: HostState, pattern: str | None) -> list[dict[str, Any]]:
    """Uninstall entries of both views whose DisplayName matches `pattern` (none = all):
    [{name, version, publisher, product_code, view, install_date}]."""
    rx = wildcard(pattern) if pattern else None
    out = []
    for e in state.uninstall_entries():
        name = e.values.get("displayname")
        if not isinstance(name, str) or not name or (rx and not rx.match(name)):
            continue
        out.append({
            "name": name,
            "version": e.values.get("displayversion"),
            "publisher": e.values.get("publisher"),
            "product_code": e.code,
            "view": e.view,
            "install_date": e.values.get("installdate"),
        })
    return out


def list_patches(state: HostState, pattern: str | None) -> list[dict[str, Any]]:
    """Applied Windows Installer patches whose DisplayName matches `pattern` (none = all):
    [{name, state (int; 1 applied, 2 superseded, 4 obsoleted), product_code, patch_code (both
    packed, as the subkey names), installed}]."""
    rx = wildcard(pattern) if pattern else None
    out = []
    for product, patch, vals in state.patch_registrations():
        name = vals.get("displayname")
        if not isinstance(name, str) or not name or (rx and not rx.match(name)):
            continue
        st = vals.get("state")
        out.append({
            "name": name,
            "state": st if isinstance(st, int) else None,
            "product_code": product,
            "patch_code": patch,
            "installed": vals.get("installed") if isinstance(vals.get("installed"), str) else None,
        })
    return out
