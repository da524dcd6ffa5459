"""The mutable state of one emulated Windows host: registry, files, services, products, WSUS.

`HostState` is what the agent emulator and the naive probes read and change. It is thread-safe
(one re-entrant lock per host) and cheap to copy: file contents are immutable objects shared
between copies (a clone of a site shares every log's bytes), registry values and file entries
are frozen dataclasses replaced on change. Its parts live by idea: the registry in
`winlab.hoststate_registry`, files in `winlab.hoststate_files`, installed products and patches in
`winlab.hoststate_products`; this module holds the OS, services, the WSUS catalog, the process
environment, and re-exports the parts' names (import them from here or from their module).

Windows facts modelled here:
- Environment variables of a 64-bit PowerShell (WinRM runs the native one): `ProgramFiles`,
  `ProgramFiles(x86)` (x64 only), `ProgramW6432`, `windir`/`SystemRoot` (`C:\\WINDOWS` on
  NT 5.x, `C:\\Windows` from 6.0), `TEMP` in the user profile ("WOW64 Implementation Details",
  MS docs https://learn.microsoft.com/windows/win32/winprog64/wow64-implementation-details).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from winlab.hoststate_files import (
    DEFAULT_MTIME,
    BytesContent,
    Content,
    DiskContent,
    FileEntry,
    FilesState,
    content_sha256,
    norm_path,
)
from winlab.hoststate_products import (
    MSI_PRODUCTS_KEY,
    UNINSTALL_KEY,
    PatchSpec,
    ProductSpec,
    ProductsState,
    UninstallEntry,
    pack_guid,
)
from winlab.hoststate_registry import RegData, RegKey, RegType, RegValue, norm_key, wow64_key

__all__ = [
    "DEFAULT_MTIME", "MSI_PRODUCTS_KEY", "UNINSTALL_KEY", "Arch", "BytesContent", "Content", "DiskContent",
    "FileEntry", "HostState", "OsInfo", "PatchSpec", "ProductSpec", "RegData", "RegKey", "RegType", "RegValue",
    "Service", "UninstallEntry", "WsusUpdate", "content_sha256", "norm_key", "norm_path", "pack_guid", "wow64_key",
]

Arch = Literal["x86", "x64"]


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
class HostState(ProductsState, FilesState):
    """Everything an emulated host knows. All public methods take the host lock.

    registry: physical key (lower case) → RegKey; files: path (lower case) → FileEntry;
    services: name (lower case) → Service; wsus_updates: the catalog; wsus_api: whether the
    WSUS admin API loads on this host.
    """

    computer_name: str
    os: OsInfo = field(default_factory=OsInfo)
    user: str = "kbfix"
    #: The account's domain (`LAB` for `LAB\\kbfix`); empty for a local account (issue 17: UAC
    #: remote restrictions apply to local accounts only, KB951016).
    user_domain: str = ""
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
                user_domain=self.user_domain,
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
