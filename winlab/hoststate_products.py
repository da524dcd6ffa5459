"""An emulated host's installed software as the registry records it: Add/Remove Programs'
Uninstall entries and Windows Installer's patch registrations, and the methods of `HostState`
that write and list them (`ProductsState`, mixed into `winlab.hoststate.HostState`).
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from winlab.hoststate_registry import RegData, RegistryState

UNINSTALL_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
# Windows Installer's per-machine registrations (products installed for all users live under the
# LocalSystem SID): an applied patch (.msp) is the key `Products\<packed product code>\Patches\
# <packed patch code>` with DisplayName and State (1 applied, 2 superseded, 4 obsoleted), the
# values `Installer.PatchesEx` / `Patch.PatchProperty` read (MS docs "Patch.PatchProperty method",
# https://learn.microsoft.com/windows/win32/msi/patch-patchproperty; MsiEnumPatchesEx). The key is
# shared between the 64- and 32-bit views (not redirected: "Registry Keys Affected by WOW64").
MSI_PRODUCTS_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\UserData\S-1-5-18\Products"


def pack_guid(guid: str) -> str:
    """Windows Installer's packed form of a GUID (the registry subkey name under Installer\\UserData):
    the first three groups reversed, then each byte of the last two groups nibble-swapped;
    `{12345678-ABCD-EF01-2345-6789ABCDEF01}` → `87654321DCBA10FE325476983BADCFE10` (32 hex digits).
    Raises ValueError for text that is not a GUID."""
    h = str(uuid.UUID(guid)).replace("-", "").upper()
    head = h[0:8][::-1] + h[8:12][::-1] + h[12:16][::-1]
    return head + "".join(h[i + 1] + h[i] for i in range(16, 32, 2))


@dataclass(frozen=True)
class ProductSpec:
    """An Uninstall entry to register: DisplayName, DisplayVersion, Publisher, the subkey name
    (`code`, default a GUID made from the name), the view (`64`/`32`, default native), InstallDate."""

    name: str
    version: str | None = None
    publisher: str | None = None
    code: str | None = None
    view: Literal["64", "32"] | None = None
    install_date: str | None = None


@dataclass(frozen=True)
class PatchSpec:
    """A Windows Installer patch registration (see MSI_PRODUCTS_KEY): the target product's code and
    the patch code (GUIDs, stored packed), DisplayName, State (1 applied) and Installed (yyyymmdd)."""

    product_code: str
    patch_code: str
    name: str
    state: int = 1
    installed: str | None = None


@dataclass(frozen=True)
class UninstallEntry:
    """One Uninstall subkey as Add/Remove Programs lists it: view, subkey name and its values."""

    view: Literal["64", "32"]
    code: str
    values: Mapping[str, RegData]


class ProductsState(RegistryState):
    """The product and patch methods of `HostState` (over its registry). Every method takes the host lock."""

    def add_product(
        self,
        name: str,
        version: str | None = None,
        publisher: str | None = None,
        code: str | None = None,
        view: Literal["64", "32"] | None = None,
        install_date: str | None = None,
    ) -> str:
        """Register an installed product as an Uninstall entry (the key Add/Remove Programs reads)
        in `view` (default: native). Returns the product code (subkey name): a stable GUID made
        from the name when not given."""
        code = code or "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "kbfix-lab:" + name.lower())).upper() + "}"
        key = self.physical_key(UNINSTALL_KEY, view or "64") + "\\" + code
        with self.lock:
            self.set_value(key, "DisplayName", name)
            if version is not None:
                self.set_value(key, "DisplayVersion", version)
            if publisher is not None:
                self.set_value(key, "Publisher", publisher)
            if install_date is not None:
                self.set_value(key, "InstallDate", install_date)
        return code

    def uninstall_views(self) -> tuple[Literal["64", "32"], ...]:
        """The Uninstall views a 64-bit process lists: both on x64, the one native view on x86
        (labelled `32`, as the agent labels it)."""
        return ("64", "32") if self.os.arch == "x64" else ("32",)

    def uninstall_entries(self) -> list[UninstallEntry]:
        """Every Uninstall subkey of every view (see `uninstall_views`), view by view, subkeys in
        name order; values keyed by lower-case name. The one walk of the Uninstall key in winlab."""
        out = []
        with self.lock:
            for view in self.uninstall_views():
                base = self.physical_key(UNINSTALL_KEY, view)
                for code in self.subkeys(base):
                    k = self.get_key(base + "\\" + code)
                    if k is not None:
                        out.append(UninstallEntry(view, code, {n: v.data for n, v in k.values.items()}))
        return out

    def remove_products(self, pattern: str) -> None:
        """Delete the Uninstall entries whose DisplayName matches the wildcard `pattern`
        (case-insensitive, `*` and `?`)."""
        rx = re.compile(fnmatch.translate(pattern.lower()))
        with self.lock:
            for e in self.uninstall_entries():
                name = e.values.get("displayname")
                if isinstance(name, str) and rx.match(name.lower()):
                    self.delete_key(self.physical_key(UNINSTALL_KEY, e.view) + "\\" + e.code)

    def add_patch(self, patch: PatchSpec) -> str:
        """Register an applied Windows Installer patch (see MSI_PRODUCTS_KEY). Returns its key.
        Raises ValueError when a code is not a GUID."""
        key = f"{MSI_PRODUCTS_KEY}\\{pack_guid(patch.product_code)}\\Patches\\{pack_guid(patch.patch_code)}"
        with self.lock:
            self.set_value(key, "DisplayName", patch.name)
            self.set_value(key, "State", patch.state)
            if patch.installed is not None:
                self.set_value(key, "Installed", patch.installed)
        return key

    def patch_registrations(self) -> list[tuple[str, str, Mapping[str, RegData]]]:
        """(packed product code, packed patch code, values by lower-case name) of every patch
        registered under MSI_PRODUCTS_KEY, in key order."""
        out: list[tuple[str, str, Mapping[str, RegData]]] = []
        with self.lock:
            for prod in self.subkeys(MSI_PRODUCTS_KEY):
                base = f"{MSI_PRODUCTS_KEY}\\{prod}\\Patches"
                for pc in self.subkeys(base):
                    k = self.get_key(base + "\\" + pc)
                    if k is not None:
                        out.append((prod, pc, {n: v.data for n, v in k.values.items()}))
        return out

