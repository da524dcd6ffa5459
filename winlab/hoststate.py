"""The mutable state of one emulated Windows host: registry, files, services, products, WSUS.

`HostState` is what the agent emulator and the naive probes read and change. It is thread-safe
(one re-entrant lock per host) and cheap to copy: file contents are immutable objects shared
between copies (a clone of a site shares every log's bytes), registry values and file entries
are frozen dataclasses replaced on change.

Windows facts modelled here:
- Registry redirection on x64: a 32-bit process sees `HKLM\\SOFTWARE\\X` at the physical key
  `HKLM\\SOFTWARE\\Wow6432Node\\X` ("Registry Redirector", MS docs
  https://learn.microsoft.com/windows/win32/winprog64/registry-redirector). On x86 both views
  are the one native key.
- Paths and registry keys are case-insensitive; `\\\\` runs collapse, `/` means `\\`.
- Environment variables of a 64-bit PowerShell (WinRM runs the native one): `ProgramFiles`,
  `ProgramFiles(x86)` (x64 only), `ProgramW6432`, `windir`/`SystemRoot` (`C:\\WINDOWS` on
  NT 5.x, `C:\\Windows` from 6.0), `TEMP` in the user profile ("WOW64 Implementation Details",
  MS docs https://learn.microsoft.com/windows/win32/winprog64/wow64-implementation-details).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

Arch = Literal["x86", "x64"]
RegType = Literal["REG_SZ", "REG_EXPAND_SZ", "REG_DWORD", "REG_QWORD", "REG_MULTI_SZ", "REG_BINARY"]
RegData = str | int | list[str] | bytes

UNINSTALL_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
# Windows Installer's per-machine registrations (products installed for all users live under the
# LocalSystem SID): an applied patch (.msp) is the key `Products\<packed product code>\Patches\
# <packed patch code>` with DisplayName and State (1 applied, 2 superseded, 4 obsoleted), the
# values `Installer.PatchesEx` / `Patch.PatchProperty` read (MS docs "Patch.PatchProperty method",
# https://learn.microsoft.com/windows/win32/msi/patch-patchproperty; MsiEnumPatchesEx). The key is
# shared between the 64- and 32-bit views (not redirected: "Registry Keys Affected by WOW64").
MSI_PRODUCTS_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Installer\UserData\S-1-5-18\Products"
DEFAULT_MTIME = datetime(2008, 8, 1, 12, 0, 0, tzinfo=timezone.utc)

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


def norm_path(path: str) -> str:
    """Canonical spelling of a Windows file path: `/` → `\\`, repeated `\\` folded (a leading
    `\\\\` of a UNC path is kept), no trailing `\\`. Case is kept; compare with `.lower()`."""
    p = path.strip().replace("/", "\\")
    unc = p.startswith("\\\\")
    p = re.sub(r"\\{2,}", r"\\", p).rstrip("\\")
    if len(p) == 2 and p[1] == ":":
        p += "\\"
    return "\\" + p if unc else p


def pack_guid(guid: str) -> str:
    """Windows Installer's packed form of a GUID (the registry subkey name under Installer\\UserData):
    the first three groups reversed, then each byte of the last two groups nibble-swapped;
    `{12345678-ABCD-EF01-2345-6789ABCDEF01}` → `87654321DCBA10FE325476983BADCFE10` (32 hex digits).
    Raises ValueError for text that is not a GUID."""
    h = str(uuid.UUID(guid)).replace("-", "").upper()
    head = h[0:8][::-1] + h[8:12][::-1] + h[12:16][::-1]
    return head + "".join(h[i + 1] + h[i] for i in range(16, 32, 2))


def wow64_key(key: str) -> str:
    """The physical key a 32-bit process reaches for `key` on x64 (HKLM\\SOFTWARE only is
    redirected here; keys already under Wow6432Node are returned unchanged)."""
    k = norm_key(key)
    low = k.lower()
    if low.startswith("hklm\\software\\wow6432node") or not (low == "hklm\\software" or low.startswith("hklm\\software\\")):
        return k
    return "HKLM\\SOFTWARE\\Wow6432Node" + k[len("HKLM\\SOFTWARE"):]


class Content(Protocol):
    """The immutable bytes of a file. `size` in bytes; `open()` gives a fresh binary reader."""

    @property
    def size(self) -> int:
        """Size in bytes."""
        ...

    def open(self) -> BinaryIO:
        """A fresh binary reader positioned at 0; the caller closes it."""
        ...


@dataclass(frozen=True)
class BytesContent:
    """File content held in memory (shared, never copied, between host clones)."""

    data: bytes

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.data)

    def open(self) -> BinaryIO:
        """A reader over the bytes (BytesIO shares the buffer until written)."""
        return io.BytesIO(self.data)


@dataclass(frozen=True)
class DiskContent:
    """File content in a file on the lab machine (large generated logs): never held in memory."""

    path: Path

    @property
    def size(self) -> int:
        """Length in bytes (stat of the backing file)."""
        return self.path.stat().st_size

    def open(self) -> BinaryIO:
        """A buffered reader on the backing file."""
        return self.path.open("rb")


def content_sha256(content: Content) -> str:
    """Lower-case hex SHA-256 of the content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with content.open() as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


@dataclass(frozen=True)
class FileEntry:
    """One file. `version` is what the agent reads as FileVersion (from the File*Part fields),
    `version_string` the FileVersion string resource, `content` the bytes (None = synthesised
    from the path and version so that size and hash are stable)."""

    path: str
    content: Content | None = None
    version: str | None = None
    version_string: str | None = None
    product_version: str | None = None
    mtime: datetime = DEFAULT_MTIME

    def data(self) -> Content:
        """The file's content, synthesising a small stable body for version-only entries."""
        if self.content is not None:
            return self.content
        return BytesContent(b"MZ\x90\x00kbfix-lab " + self.path.lower().encode() + b" " + (self.version or "").encode())

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.data().size


@dataclass
class Service:
    """One Windows service: name as registered, status (`Running`, `Stopped`, …), start mode."""

    name: str
    status: str = "Running"
    start_mode: str = "Auto"


@dataclass
class WsusUpdate:
    """One update in the WSUS catalog as the admin API (`Microsoft.UpdateServices.Administration`)
    shows it: id (GUID), title, IsDeclined, approvals ({group, action}), and whether approving
    needs a licence agreement that is not accepted yet (`IUpdate.RequiresLicenseAgreementAcceptance`)."""

    id: str
    title: str
    declined: bool = False
    approvals: list[dict[str, str]] = field(default_factory=list)
    requires_license: bool = False


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


@dataclass(frozen=True)
class OsInfo:
    """The host's OS: version (`5.2.3790`), arch, culture (`da-DK`) and its ANSI codepage."""

    version: str = "5.2.3790"
    arch: Arch = "x64"
    culture: str = "en-US"

    @property
    def before_2008_r2(self) -> bool:
        """NT 5.x and 6.0 (Server 2003, 2008, Vista): older than Server 2008 R2 / Windows 7 (6.1)."""
        parts = [int(p) for p in re.findall(r"\d+", self.version)[:2]] + [0, 0]
        return (parts[0], parts[1]) < (6, 1)

    @property
    def ansi_codepage(self) -> str:
        """Python codec of the culture's ANSI codepage (GetACP): cp936 for zh-CN, cp1252 for
        Western European cultures (MS docs "Code Page Identifiers"), cp1251/932/949/950 for a few others."""
        lang = self.culture.lower()
        if lang.startswith("zh-cn") or lang.startswith("zh-sg") or lang == "zh-hans":
            return "cp936"
        if lang.startswith("zh"):
            return "cp950"
        if lang.startswith("ja"):
            return "cp932"
        if lang.startswith("ko"):
            return "cp949"
        if lang.startswith(("ru", "uk", "bg")):
            return "cp1251"
        if lang.startswith(("pl", "cs", "hu", "sk")):
            return "cp1250"
        return "cp1252"


@dataclass
class HostState:
    """Everything an emulated host knows. All public methods take the host lock.

    registry: physical key (lower case) → RegKey; files: path (lower case) → FileEntry;
    services: name (lower case) → Service; wsus_updates: the catalog; wsus_api: whether the
    WSUS admin API loads on this host.
    """

    computer_name: str
    os: OsInfo = field(default_factory=OsInfo)
    user: str = "kbfix"
    registry: dict[str, RegKey] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    wsus_updates: list[WsusUpdate] = field(default_factory=list)
    wsus_api: bool = False
    wsus_groups: list[str] = field(default_factory=lambda: ["All Computers", "Unassigned Computers"])
    wsus_replica: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- copies -------------------------------------------------------------------------------

    def copy(self, computer_name: str | None = None) -> HostState:
        """An independent copy (file contents and frozen values are shared, containers are not)."""
        with self.lock:
            return HostState(
                computer_name=computer_name or self.computer_name,
                os=self.os,
                user=self.user,
                registry={k: RegKey(v.path, dict(v.values)) for k, v in self.registry.items()},
                files=dict(self.files),
                services={k: replace(v) for k, v in self.services.items()},
                wsus_updates=[replace(u, approvals=[dict(a) for a in u.approvals]) for u in self.wsus_updates],
                wsus_api=self.wsus_api,
                wsus_groups=list(self.wsus_groups),
                wsus_replica=self.wsus_replica,
            )

    # --- environment --------------------------------------------------------------------------

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment of the agent (64-bit PowerShell on x64), keys as Windows spells
        them; `extra` (the WS-Man shell's environment) overrides."""
        nt5 = self.os.version.split(".")[0] in ("5",)
        windir = "C:\\WINDOWS" if nt5 else "C:\\Windows"
        profile = f"C:\\Documents and Settings\\{self.user}" if nt5 else f"C:\\Users\\{self.user}"
        temp = f"{profile}\\Local Settings\\Temp" if nt5 else f"{profile}\\AppData\\Local\\Temp"
        env = {
            "ALLUSERSPROFILE": "C:\\Documents and Settings\\All Users" if nt5 else "C:\\ProgramData",
            "APPDATA": f"{profile}\\Application Data" if nt5 else f"{profile}\\AppData\\Roaming",
            "CommonProgramFiles": "C:\\Program Files\\Common Files",
            "COMPUTERNAME": self.computer_name.upper(),
            "ComSpec": f"{windir}\\system32\\cmd.exe",
            "NUMBER_OF_PROCESSORS": "2",
            "OS": "Windows_NT",
            "PROCESSOR_ARCHITECTURE": "AMD64" if self.os.arch == "x64" else "x86",
            "ProgramFiles": "C:\\Program Files",
            "SystemDrive": "C:",
            "SystemRoot": windir,
            "TEMP": temp,
            "TMP": temp,
            "USERNAME": self.user,
            "USERPROFILE": profile,
            "windir": windir,
        }
        if self.os.arch == "x64":
            env["ProgramFiles(x86)"] = "C:\\Program Files (x86)"
            env["CommonProgramFiles(x86)"] = "C:\\Program Files (x86)\\Common Files"
            env["ProgramW6432"] = "C:\\Program Files"
        if extra:
            env.update(extra)
        return env

    def expand(self, text: str, extra: Mapping[str, str] | None = None) -> str:
        """`Environment.ExpandEnvironmentVariables`: `%NAME%` replaced when defined (names are
        case-insensitive), left as written when not."""
        env = {k.lower(): v for k, v in self.environment(extra).items()}

        def sub(m: re.Match[str]) -> str:
            return env.get(m.group(1).lower(), m.group(0))

        return re.sub(r"%([^%]+)%", sub, text)

    # --- registry -----------------------------------------------------------------------------

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

    # --- products (Uninstall entries) ---------------------------------------------------------

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

    # --- files --------------------------------------------------------------------------------

    def get_file(self, path: str) -> FileEntry | None:
        """The file at `path` (case-insensitive), or None."""
        with self.lock:
            return self.files.get(norm_path(path).lower())

    def put_file(self, entry: FileEntry) -> None:
        """Create or replace a file (its path is normalised)."""
        with self.lock:
            p = norm_path(entry.path)
            old = self.files.get(p.lower())
            # Windows keeps the spelling of an existing file's name when it is overwritten.
            self.files[p.lower()] = replace(entry, path=old.path if old else p)

    def delete_file(self, path: str) -> None:
        """Remove the file at `path` (no error when absent)."""
        with self.lock:
            self.files.pop(norm_path(path).lower(), None)

    def iter_files(self, directory: str) -> Iterator[FileEntry]:
        """Files directly in `directory`."""
        low = norm_path(directory).lower().rstrip("\\") + "\\"
        with self.lock:
            items = [e for k, e in self.files.items() if k.startswith(low) and "\\" not in k[len(low):]]
        yield from items

    # --- services -----------------------------------------------------------------------------

    def get_service(self, name: str) -> Service | None:
        """The service by name (case-insensitive), or None."""
        with self.lock:
            return self.services.get(name.lower())

    def set_service(self, name: str, status: str, start_mode: str | None = None) -> None:
        """Create or update a service."""
        with self.lock:
            svc = self.services.get(name.lower())
            if svc is None:
                self.services[name.lower()] = Service(name, status, start_mode or "Auto")
            else:
                svc.status = status
                if start_mode:
                    svc.start_mode = start_mode
