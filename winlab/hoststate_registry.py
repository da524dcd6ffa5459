"""An emulated host's registry: key spelling, x64 redirection, values, and the registry half of
`HostState` (`RegistryState`, mixed into `winlab.hoststate.HostState`).

Windows facts modelled here:
- Registry redirection on x64: a 32-bit process sees `HKLM\\SOFTWARE\\X` at the physical key
  `HKLM\\SOFTWARE\\Wow6432Node\\X` ("Registry Redirector", MS docs
  https://learn.microsoft.com/windows/win32/winprog64/registry-redirector). On x86 both views
  are the one native key.
- Keys are case-insensitive; `\\\\` runs collapse, `/` means `\\`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal, Protocol

RegType = Literal["REG_SZ", "REG_EXPAND_SZ", "REG_DWORD", "REG_QWORD", "REG_MULTI_SZ", "REG_BINARY"]
RegData = str | int | list[str] | bytes

_HIVES = {
    "hkey_local_machine": "HKLM",
    "hklm": "HKLM",
    "hkey_current_user": "HKCU",
    "hkcu": "HKCU",
    "hkey_classes_root": "HKCR",
    "hkcr": "HKCR",
    "hkey_users": "HKU",
    "hku": "HKU",
}


def norm_key(key: str) -> str:
    """Canonical spelling of a registry key: `HKLM\\A\\B` (hive abbreviated, `HKLM:` accepted,
    `/` and repeated `\\` folded, no trailing `\\`). Case is kept; compare with `.lower()`."""
    parts = [p for p in re.split(r"[\\/]+", key.strip()) if p]
    if not parts:
        return ""
    hive = parts[0].rstrip(":")
    parts[0] = _HIVES.get(hive.lower(), hive)
    return "\\".join(parts)


def wow64_key(key: str) -> str:
    """The physical key a 32-bit process reaches for `key` on x64 (HKLM\\SOFTWARE only is
    redirected here; keys already under Wow6432Node are returned unchanged)."""
    k = norm_key(key)
    low = k.lower()
    if low.startswith("hklm\\software\\wow6432node") or not (low == "hklm\\software" or low.startswith("hklm\\software\\")):
        return k
    return "HKLM\\SOFTWARE\\Wow6432Node" + k[len("HKLM\\SOFTWARE"):]


@dataclass(frozen=True)
class RegValue:
    """One registry value: its name as written, type and data (str, int, list of str, or bytes)."""

    name: str
    type: RegType
    data: RegData


@dataclass
class RegKey:
    """One physical registry key: its path as first written and its values by lower-case name."""

    path: str
    values: dict[str, RegValue] = field(default_factory=dict)



class _Architecture(Protocol):
    """What the registry needs of the host's OS (`winlab.hoststate.OsInfo`): its architecture."""

    @property
    def arch(self) -> str:
        """`x64` or `x86`."""
        ...


class RegistryState:
    """The registry methods of `HostState` (which holds `registry`, `lock` and `os`).

    registry: physical key (lower case) → RegKey. Every method takes the host lock.
    """

    registry: dict[str, RegKey]
    lock: threading.RLock
    os: _Architecture

    def physical_key(self, key: str, view: Literal["64", "32"]) -> str:
        """The physical key that `view` reaches for `key` (see module docstring)."""
        if view == "32" and self.os.arch == "x64":
            return wow64_key(key)
        return norm_key(key)

    def ensure_key(self, key: str) -> RegKey:
        """The physical key `key`, created with its parents when missing."""
        k = norm_key(key)
        with self.lock:
            parts = k.split("\\")
            for i in range(1, len(parts) + 1):  # the hive root exists too (it lists SOFTWARE, …)
                sub = "\\".join(parts[:i])
                self.registry.setdefault(sub.lower(), RegKey(sub))
            return self.registry.setdefault(k.lower(), RegKey(k))

    def get_key(self, key: str) -> RegKey | None:
        """The physical key, or None when it does not exist."""
        with self.lock:
            return self.registry.get(norm_key(key).lower())

    def set_value(self, key: str, name: str, data: RegData, type_: RegType | None = None) -> None:
        """Write a value; the type follows the data when not given (str → REG_SZ, int → REG_DWORD
        (REG_QWORD above 32 bits), list → REG_MULTI_SZ, bytes → REG_BINARY)."""
        if type_ is None:
            if isinstance(data, bool):
                data, type_ = int(data), "REG_DWORD"
            elif isinstance(data, int):
                type_ = "REG_DWORD" if 0 <= data <= 0xFFFFFFFF else "REG_QWORD"
            elif isinstance(data, list):
                type_ = "REG_MULTI_SZ"
            elif isinstance(data, bytes):
                type_ = "REG_BINARY"
            else:
                type_ = "REG_SZ"
        with self.lock:
            self.ensure_key(key).values[name.lower()] = RegValue(name, type_, data)

    def delete_key(self, key: str) -> None:
        """Remove a key and its subkeys (no error when absent)."""
        low = norm_key(key).lower()
        with self.lock:
            for k in [k for k in self.registry if k == low or k.startswith(low + "\\")]:
                del self.registry[k]

    def subkeys(self, key: str) -> list[str]:
        """Names of the direct subkeys of the physical key, sorted case-insensitively."""
        low = norm_key(key).lower() + "\\"
        with self.lock:
            names = {v.path.split("\\")[-1] for k, v in self.registry.items() if k.startswith(low) and "\\" not in k[len(low):]}
        return sorted(names, key=str.lower)
