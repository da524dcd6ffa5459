"""The exported PowerShell 2.0 script: `collect.ps1` with one host's values filled in.

Every value put into the script is checked against a strict alphabet first (host name
`[A-Za-z0-9][A-Za-z0-9_.-]*`, hex, base64, an ISO time), so nothing from the inventory can
become PowerShell code; the request and the agent travel as base64 data.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from remoting.agent_delivery import read_agent_bytes
from remoting.ops import OPS

TEMPLATE_PATH = Path(__file__).with_name("collect.ps1")
_OP_NAME = re.compile(r"^[a-z]+\.[a-z_]+$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_CHECKS = {
    "__KBFIX_NONCE__": re.compile(r"^[0-9a-f]{32}$"),
    "__KBFIX_CREATED__": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"),
    "__KBFIX_KEY__": re.compile(r"^[0-9a-f]{64}$"),
    "__KBFIX_REQUEST__": re.compile(r"^[A-Za-z0-9+/=]+$"),
}


def script_file_name(host: str) -> str:
    """`WSUS01.kbfix-offline.ps1`."""
    return f"{host}.kbfix-offline.ps1"


def answer_file_name(host: str) -> str:
    """`WSUS01.kbfix-answer.txt` (what the script writes)."""
    return f"{host}.kbfix-answer.txt"


def render_script(host: str, nonce: str, created: str, key: bytes, request: bytes, agent: bytes | None = None,
                  computer: str | None = None) -> str:
    """The script text for one host (CRLF line ends, ASCII); `computer`: the computer name it must
    run on (default: the host name's first label). Raises ValueError for a host or computer name
    or value outside its alphabet."""
    computer = computer or host.split(".")[0]
    for what, name in (("host", host), ("computer", computer)):
        if not HOST_RE.match(name):
            raise ValueError(f"{what} name {name!r} cannot be embedded in an offline script "
                             "(allowed: letters, digits, '_', '.', '-')")
    agent_b64 = base64.b64encode(agent if agent is not None else read_agent_bytes()).decode("ascii")
    values = {
        "__KBFIX_HOST__": host,
        "__KBFIX_COMPUTER__": computer,
        "__KBFIX_NONCE__": nonce,
        "__KBFIX_CREATED__": created,
        "__KBFIX_KEY__": key.hex(),
        "__KBFIX_REQUEST__": base64.b64encode(request).decode("ascii"),
    }
    for name, rx in _CHECKS.items():
        if not rx.match(values[name]):
            raise ValueError(f"offline script value {name} is malformed")
    read_ops = [name for name, spec in OPS.items() if not spec.mutating]
    if not all(_OP_NAME.match(n) for n in read_ops):
        raise ValueError("op table has a name that cannot be embedded")
    text = TEMPLATE_PATH.read_text(encoding="ascii").replace("\r\n", "\n")
    text = text.replace("__KBFIX_READ_OPS__", ", ".join(f"'{n}'" for n in read_ops))
    for name, value in values.items():
        text = text.replace(name, value)
    text = text.replace("__KBFIX_AGENT__", "\n".join(agent_b64[i:i + 76] for i in range(0, len(agent_b64), 76)))
    return text.replace("\n", "\r\n")
