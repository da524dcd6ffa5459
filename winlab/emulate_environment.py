"""The agent's `host.environment` op, emulated, and the WinRM facts `kbfix doctor` reads (issue 17).

Every fact comes from the host's fixture as Windows keeps it, so a fixture author sets the same
registry values an administrator would find on the server:

- PowerShell: `HKLM\\SOFTWARE\\Microsoft\\PowerShell\\1\\PowerShellEngine` `PowerShellVersion`
  (PowerShell 2.0 registers there; MS docs "Determine the installed version of PowerShell").
  A host without the value runs the agent anyway (the lab only emulates 2.0), reported as `2.0`.
- .NET: subkeys `vX` of `HKLM\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP` with `Install` = 1
  (or `vX\\Full\\Install` for 4.x), MS docs "How to: Determine which .NET Framework versions are
  installed". PowerShell 2.0 runs on CLR 2.0 (`2.0.50727`), so `clr_version` is that CLR.
- Code pages: `HKLM\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage` `ACP`/`OEMCP`, else the
  culture's defaults (MS docs "Code Page Identifiers": en-US 1252/437, Western European 1252/850,
  zh-CN 936/936, ...).
- FIPS policy: `HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\FipsAlgorithmPolicy` `Enabled`
  (Vista and later) or `Lsa` `FIPSAlgorithmPolicy` (XP/2003), MS docs "System cryptography: Use
  FIPS compliant algorithms for encryption, hashing, and signing".
- Elevated token (UAC remote restrictions, KB951016): NT 5.x has no UAC (always elevated); from
  6.0 a domain account in Administrators gets its full token; a local account other than the
  built-in Administrator gets a filtered token unless
  `HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System` `LocalAccountTokenFilterPolicy` = 1.
- WinRM config (`winrm get winrm/config`): MaxEnvelopeSizekb, MaxShellsPerUser, IdleTimeout from
  the fixture's `wsman:`; MaxMemoryPerShellMB 150 (the WinRM 2.0 default, DESIGN.md), or the
  registry value `HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WSMAN\\Service`
  `MaxMemoryPerShellMB` when a fixture sets it. Reading the config resource needs an
  administrator token ("Installation and configuration for Windows Remote Management": the
  default root SDDL grants Administrators only).
"""

from __future__ import annotations

from typing import Any

from remoting.agent_protocol import OpRequest
from winlab.emulate_common import AgentContext
from winlab.hoststate import HostState

__all__ = ["environment_facts", "op_host_environment", "token_elevated", "winrm_config"]

PS_ENGINE_KEY = r"HKLM\SOFTWARE\Microsoft\PowerShell\1\PowerShellEngine"
NDP_KEY = r"HKLM\SOFTWARE\Microsoft\NET Framework Setup\NDP"
NLS_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\Nls\CodePage"
LSA_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\Lsa"
POLICIES_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System"
WSMAN_SERVICE_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WSMAN\Service"
#: WinRM 2.0's MaxMemoryPerShellMB default (DESIGN.md, "Windows facts that bite").
DEFAULT_MAX_MEMORY_PER_SHELL_MB = 150

# Culture prefix → OEM code page (MS docs "Code Page Identifiers"; GetOEMCP of those locales).
_OEM = {"en-us": 437, "zh-cn": 936, "zh-sg": 936, "zh": 950, "ja": 932, "ko": 949, "ru": 866, "uk": 866,
        "bg": 866, "pl": 852, "cs": 852, "hu": 852, "sk": 852}


def _value(state: HostState, key: str, name: str) -> Any:
    k = state.get_key(key)
    if k is None:
        return None
    v = k.values.get(name.lower())
    return None if v is None else v.data


def _int(value: Any) -> int | None:
    try:
        return int(str(value), 0) if value is not None else None
    except ValueError:
        return None


def oem_codepage(culture: str) -> int:
    """The OEM code page of a culture (`da-DK` → 850), see `_OEM`; Western default 850."""
    low = culture.lower()
    for prefix in (low, low.split("-")[0]):
        if prefix in _OEM:
            return _OEM[prefix]
    return 850


def token_elevated(state: HostState) -> bool:
    """Whether a WinRM logon of the fixture's account gets a full administrator token (KB951016)."""
    if state.os.version.split(".")[0] == "5":
        return True  # no UAC before Windows Vista / Server 2008
    if state.user_domain:
        return True
    if state.user.lower() == "administrator":
        return True  # the built-in RID-500 account (FilterAdministratorToken defaults to 0)
    return _int(_value(state, POLICIES_KEY, "LocalAccountTokenFilterPolicy")) == 1


def environment_facts(state: HostState) -> dict[str, Any]:
    """The `host.environment` data (shape: remoting/PROTOCOL.md) of an emulated host."""
    with state.lock:
        dotnet: list[str] = []
        for sub in state.subkeys(NDP_KEY):
            if not sub.lower().startswith("v"):
                continue
            inst = _int(_value(state, f"{NDP_KEY}\\{sub}", "Install"))
            if inst is None:
                inst = _int(_value(state, f"{NDP_KEY}\\{sub}\\Full", "Install"))
            if inst == 1:
                dotnet.append(sub[1:])
        acp = _int(_value(state, NLS_KEY, "ACP"))
        oem = _int(_value(state, NLS_KEY, "OEMCP"))
        fips = _int(_value(state, LSA_KEY + r"\FipsAlgorithmPolicy", "Enabled"))
        if fips is None:
            fips = _int(_value(state, LSA_KEY, "FIPSAlgorithmPolicy"))
        latfp = _int(_value(state, POLICIES_KEY, "LocalAccountTokenFilterPolicy"))
        ps = _value(state, PS_ENGINE_KEY, "PowerShellVersion")
        domain = state.user_domain or state.computer_name
        return {
            "ps_version": ".".join(str(ps).split(".")[:2]) if ps else "2.0",
            "clr_version": "2.0.50727.3053",
            "dotnet": dotnet,
            "culture": state.os.culture,
            "os_language": state.os.culture,
            "ansi_codepage": acp if acp is not None else int(state.os.ansi_codepage[2:]),
            "oem_codepage": oem if oem is not None else oem_codepage(state.os.culture),
            "process_64bit": state.os.arch == "x64",
            "os_64bit": state.os.arch == "x64",
            "fips_policy": bool(fips),
            "user": f"{domain}\\{state.user}",
            "elevated": token_elevated(state),
            "local_account": not state.user_domain,
            "local_account_token_filter_policy": latfp,
        }


def op_host_environment(o: OpRequest, ctx: AgentContext) -> dict[str, Any]:
    """host.environment: the facts above (no arguments)."""
    return environment_facts(ctx.state)


def winrm_config(state: HostState, max_envelope_kb: int, max_shells_per_user: int, idle_timeout_s: float) -> dict[str, int]:
    """The WinRM settings the lab answers a config Get with (names as `winrm get winrm/config` prints them)."""
    mem = _int(_value(state, WSMAN_SERVICE_KEY, "MaxMemoryPerShellMB"))
    return {
        "MaxEnvelopeSizekb": max_envelope_kb,
        "MaxShellsPerUser": max_shells_per_user,
        "MaxMemoryPerShellMB": mem if mem is not None else DEFAULT_MAX_MEMORY_PER_SHELL_MB,
        "IdleTimeout": int(idle_timeout_s * 1000),
    }
