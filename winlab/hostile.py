"""Hostile-host behaviour for the lab (issue 20): what a compromised or broken Windows host can
send back through a perfectly valid WS-Management exchange.

Nothing on Windows constrains what a process on the host writes: WinRM relays the bytes a
command writes to stdout/stderr as base64 `rsp:Stream` elements ([MS-WSMV] 2.2.4.40 StreamType)
and keeps answering Receive with `CommandState Running` for as long as the process runs
([MS-WSMV] 3.1.4.14 Receive; 2.2.4.9 CommandStateType: Done only when the process has exited).
So an attacker who controls the host (or a wedged PowerShell that loops writing error records)
can stream stderr forever, and can answer the agent's request with any JSON and any text,
including terminal escape sequences, in fields the controller later prints.

Fault keys (`winlab.faults.Faults`): `stderr_flood`, `type_confused`, `escape_names`.
"""

from __future__ import annotations

from typing import Any

#: Text a hostile host plants in names: an OSC title change, a screen clear, an OSC-8 link, a
#: forged second line and Rich markup. ECMA-48 control sequences; OSC 8 as terminals implement it.
ESCAPE_TEXT = (
    "\x1b]0;pwned-title\x07\x1b[2J\x1b[H"
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    "\r\nwsus99\tok\tforged [bold red]line[/]"
)


def flood_chunk(size: int) -> bytes:
    """`size` bytes of stderr as PowerShell writes error records when its stderr is not a
    console: CLIXML (`#< CLIXML` then `<Objs>` of `<S S="Error">` strings; the same form as
    `winlab.naive_probes.clixml_errors`), each record carrying escape sequences."""
    record = (f'<S S="Error">Write-Error : flood {ESCAPE_TEXT!r}_x000D__x000A_</S>').encode()
    head = b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    body = head + record * (max(size - len(head), 0) // len(record) + 1)
    return body[:size]


def _confuse(value: Any) -> Any:
    """The same information in the wrong JSON type: str → [str], int/float → str,
    bool → "yes", list → {"0": …}, dict → [values], None → {}."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return {}


def apply(document: dict[str, Any], *, type_confused: bool, escape_names: bool) -> dict[str, Any]:
    """The response document a hostile agent sends instead of `document` (unchanged when both
    flags are off). The framing, nonce and protocol number stay valid: only the content lies."""
    if escape_names:
        host = dict(document.get("host") or {})
        for key in ("computer_name", "os_version", "culture"):
            host[key] = f"{host.get(key, '')}{ESCAPE_TEXT}"
        document = {**document, "host": host}
    if type_confused:
        results = []
        for item in document.get("results", []):
            item = dict(item)
            if isinstance(item.get("data"), dict):
                item["data"] = {k: _confuse(v) for k, v in item["data"].items()}
            results.append(item)
        host = {k: _confuse(v) for k, v in (document.get("host") or {}).items()}
        document = {**document, "host": host, "results": results}
    return document
