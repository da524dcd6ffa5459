"""The "naive peer": the PowerShell one-liners a hand-written pywinrm script sends, and their emulation.

A typical script written without kbfix calls `winrm.Session.run_ps(script)` once per probe;
pywinrm sends each as `powershell -encodedcommand <base64 of UTF-16LE>` in a new shell and a new
powershell.exe process. The benchmarks compare kbfix's one-round-trip agent with this peer, so
the script texts live here (one place) and `EmulatedHost` answers them from the host state, in
the text PowerShell 2.0 prints:

- a value prints as its text and CRLF; `$null` prints nothing;
- a non-terminating error goes to stderr as CLIXML (`#< CLIXML` + an `<S S="Error">` record,
  which pywinrm's `_clean_error_msg` turns back into text) and powershell.exe exits 1;
- stdout is encoded in the shell's codepage (pywinrm's default 437; 65001 = UTF-8), so
  non-ASCII log text arrives as `?` on a 437 shell, as on Windows.

The peer runs as a 64-bit process, so it reads only the native registry view (it misses
Wow6432Node Uninstall entries and keys: a real pitfall of such scripts).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from winlab.emulate_logscan import ScanSpec, scan_content
from winlab.hoststate import HostState
from winlab.products import list_products

WSUS_SETUP_KEY = r"HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup"
WSUS_DLL = (
    r"C:\Program Files\Update Services\WebServices\ClientWebService\bin"
    r"\Microsoft.UpdateServices.WebServices.Client.dll"
)
WSUS_LOG = r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log"
WSUS_LOG_PATTERN = r"ClientImplementation\.SyncUpdates\s+System\.ArgumentException"


def _q(text: str) -> str:
    """A PowerShell single-quoted literal ('' escapes ')."""
    return "'" + text.replace("'", "''") + "'"


def _psdrive(key: str) -> str:
    """`HKLM\\X` → `HKLM:\\X` (the registry PSDrive path)."""
    hive, _, rest = key.partition("\\")
    return f"{hive.rstrip(':').upper()}:\\{rest}"


def registry_value_script(key: str, name: str) -> str:
    """Read one registry value: prints its data."""
    return f"(Get-ItemProperty -Path {_q(_psdrive(key))} -Name {_q(name)}).{_q(name)}"


def file_version_script(path: str) -> str:
    """Read a file's FileVersion string: prints it."""
    return f"(Get-Item -LiteralPath {_q(path)}).VersionInfo.FileVersion"


def select_string_script(path: str, pattern: str) -> str:
    """Select-String over a whole log: prints every matching line (it reads the whole file)."""
    return f"Select-String -Path {_q(path)} -Pattern {_q(pattern)} | ForEach-Object {{ $_.Line }}"


def products_script(pattern: str) -> str:
    """Installed products whose DisplayName is -like `pattern` (native Uninstall view only)."""
    return (
        "Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' | "
        f"Where-Object {{ $_.DisplayName -like {_q(pattern)} }} | ForEach-Object {{ $_.DisplayName }}"
    )


def service_status_script(name: str) -> str:
    """A service's status: prints Running/Stopped."""
    return f"(Get-Service -Name {_q(name)}).Status"


def naive_scripts(
    *,
    setup_key: str = WSUS_SETUP_KEY,
    value_name: str = "VersionString",
    dll_path: str = WSUS_DLL,
    log_path: str = WSUS_LOG,
    log_pattern: str = WSUS_LOG_PATTERN,
    product_pattern: str = "*KB954960*",
    service: str = "WsusService",
) -> list[str]:
    """The five probes a naive KB954960 check sends, one `run_ps` each (defaults: WSUS 3.0 on
    the default install path)."""
    return [
        registry_value_script(setup_key, value_name),
        file_version_script(dll_path),
        select_string_script(log_path, log_pattern),
        products_script(product_pattern),
        service_status_script(name=service),
    ]


# --- emulation -----------------------------------------------------------------------------------

_LIT = r"'((?:[^']|'')*)'"


def _unq(s: str) -> str:
    return s.replace("''", "'")


@dataclass(frozen=True)
class PsOutput:
    """What powershell.exe printed: text lines for stdout, error messages, exit code."""

    stdout: str
    errors: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """1 when an error was written (the last pipeline failed), else 0."""
        return 1 if self.errors else 0


def clixml_errors(messages: tuple[str, ...]) -> bytes:
    """Error records as PowerShell writes them to stderr when it is not attached to a console."""
    body = "".join(
        f'<S S="Error">{escape(m).replace(chr(13) + chr(10), "_x000D__x000A_")}_x000D__x000A_</S>' for m in messages
    )
    return ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            + body + "</Objs>").encode("utf-8")


def _not_found(cmdlet: str, path: str) -> str:
    return f"{cmdlet} : Cannot find path '{path}' because it does not exist."


def _reg(state: HostState, m: re.Match[str]) -> PsOutput:
    drive_key, name = _unq(m.group(1)), _unq(m.group(2))
    key = drive_key.replace(":", "", 1)
    k = state.get_key(key)
    if k is None:
        return PsOutput("", (_not_found("Get-ItemProperty", drive_key),))
    v = k.values.get(name.lower())
    if v is None:
        return PsOutput("", (f"Get-ItemProperty : Property {name} does not exist at path {k.path}.",))
    data = v.data
    if isinstance(data, list):
        return PsOutput("".join(f"{x}\r\n" for x in data))
    if isinstance(data, bytes):
        return PsOutput("".join(f"{b}\r\n" for b in data))
    return PsOutput(f"{data}\r\n")


def _filever(state: HostState, m: re.Match[str]) -> PsOutput:
    path = _unq(m.group(1))
    fe = state.get_file(path)
    if fe is None:
        return PsOutput("", (_not_found("Get-Item", path),))
    return PsOutput(f"{fe.version_string}\r\n" if fe.version_string else "")


def _select(state: HostState, m: re.Match[str]) -> PsOutput:
    path, pattern = _unq(m.group(1)), _unq(m.group(2))
    fe = state.get_file(path)
    if fe is None:
        return PsOutput("", (_not_found("Select-String", path),))
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        return PsOutput("", (f"Select-String : The string {pattern} is not a valid regular expression.",))
    spec = ScanSpec(patterns=(rx,), max_matches=10**9, max_line_chars=1 << 20)
    res = scan_content(fe.data(), spec, state.os.ansi_codepage)
    return PsOutput("".join(x["line"] + "\r\n" for x in res["matches"]))


def _products(state: HostState, m: re.Match[str]) -> PsOutput:
    native = "64" if state.os.arch == "x64" else "32"  # the agent labels an x86 OS's one view "32"
    names = [p["name"] for p in list_products(state, _unq(m.group(1))) if p["view"] == native]
    return PsOutput("".join(n + "\r\n" for n in names))


def _service(state: HostState, m: re.Match[str]) -> PsOutput:
    name = _unq(m.group(1))
    svc = state.get_service(name)
    if svc is None:
        return PsOutput("", (f"Get-Service : Cannot find any service with service name '{name}'.",))
    return PsOutput(f"{svc.status}\r\n")


_PROBES: tuple[tuple[re.Pattern[str], Callable[[HostState, re.Match[str]], PsOutput]], ...] = (
    (re.compile(rf"^\(Get-ItemProperty -Path {_LIT} -Name {_LIT}\)\.{_LIT}$"), _reg),
    (re.compile(rf"^\(Get-Item -LiteralPath {_LIT}\)\.VersionInfo\.FileVersion$"), _filever),
    (re.compile(rf"^Select-String -Path {_LIT} -Pattern {_LIT} \| ForEach-Object \{{ \$_\.Line \}}$"), _select),
    (
        re.compile(
            r"^Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\\*' \| "
            rf"Where-Object \{{ \$_\.DisplayName -like {_LIT} \}} \| ForEach-Object \{{ \$_\.DisplayName \}}$"
        ),
        _products,
    ),
    (re.compile(rf"^\(Get-Service -Name {_LIT}\)\.Status$"), _service),
)


def decode_encoded_command(b64: str) -> str | None:
    """The script text of a `-EncodedCommand` argument (base64 of UTF-16LE), or None."""
    try:
        return base64.b64decode(b64, validate=True).decode("utf-16-le")
    except (ValueError, UnicodeDecodeError):
        return None


def run_naive_script(state: HostState, script: str) -> PsOutput | None:
    """Answer one of this module's scripts from `state`; None when the script is not one of them."""
    text = script.strip()
    for rx, handler in _PROBES:
        m = rx.match(text)
        if m:
            return handler(state, m)
    return None
