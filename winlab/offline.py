"""Running an exported offline script (kbfix/offline/collect.ps1) on an emulated host, as an
administrator would on the server, and writing the answer file the script writes.

The lab reads the values the script embeds (host, nonce, key, request, agent), refuses a script
whose agent is not the shipped one (as the lab's WS-Man host does), runs the request through the
host's real command path (`powershell.exe` with the bootstrap and stdin the client would send)
and writes the answer in the format kbfix/offline/answers.py documents, signed as the script
signs it. This is a second, independent implementation of the answer writer: the controller's
verifier is tested against it, as the agent emulator tests the agent codec.

    name, text = answer_script(script_text, host)             # host: an EmulatedHost
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timezone
from pathlib import Path

from remoting import agent_delivery, agent_protocol
from winlab.host import EmulatedHost, run_agent_request

_ASSIGN = re.compile(r"^\$kbfix(Host|Computer|Nonce|Created|KeyHex|RequestB64) = '([^']*)'\r?$", re.M)
_READ_OPS = re.compile(r"'([a-z]+\.[a-z_]+)'")
_AGENT = re.compile(r"^\$kbfixAgentB64 = @'\r?\n(.*?)\r?\n'@", re.M | re.S)


class ScriptError(ValueError):
    """A file that is not an exported kbfix offline script, or whose agent is not the shipped one."""


def script_values(text: str) -> dict[str, str]:
    """host, computer, nonce, created, keyhex, requestb64 and agent (base64) from a script. Raises ScriptError."""
    found = {m.group(1).lower(): m.group(2) for m in _ASSIGN.finditer(text)}
    agent = _AGENT.search(text)
    if set(found) != {"host", "computer", "nonce", "created", "keyhex", "requestb64"} or agent is None:
        raise ScriptError("not a kbfix offline script (its embedded values are missing)")
    found["agent"] = re.sub(r"\s", "", agent.group(1))
    return found


def answer_script(text: str, host: EmulatedHost, *, collected: datetime | None = None) -> tuple[str, str]:
    """Run the script's request on `host`; returns (answer file name, answer text).

    collected: the time the script reports (default now, UTC). Raises ScriptError."""
    v = script_values(text)
    # The script's first guard: it runs on the computer it was exported for (NetBIOS names, 15 chars).
    here, wanted = host.state.computer_name.upper()[:15], v["computer"].upper()[:15]
    if here != wanted:
        raise ScriptError(f"kbfix: this script is for computer {v['computer']} (inventory host {v['host']}), "
                          f"not {host.state.computer_name}: run it on {v['computer']}; nothing was collected")
    agent = base64.b64decode(v["agent"])
    if agent.replace(b"\r\n", b"\n") != agent_delivery.read_agent_bytes():
        raise ScriptError("the script's embedded agent is not the shipped remoting/agent.ps1")
    request_doc = base64.b64decode(v["requestb64"])
    request = agent_protocol.decode_request(request_doc)
    # The script's own guard: it runs only read ops of the list it embeds.
    read_ops = set(_READ_OPS.findall(text.split("$kbfixReadOps = @(", 1)[1].split(")", 1)[0])) if "$kbfixReadOps" in text else set()
    refused = [o.name for o in request.ops if o.name not in read_ops]
    if refused:
        raise ScriptError(f"kbfix: refusing to run: the embedded request names op {refused[0]}, which is not read-only")
    result, _resp = run_agent_request(host, request)
    when = (collected or datetime.now(timezone.utc)).astimezone(timezone.utc)
    lines = [
        "kbfix-offline-answer\t1",
        f"host\t{v['host']}",
        f"nonce\t{v['nonce']}",
        f"computer\t{host.state.computer_name}",  # [Environment]::MachineName
        f"collected\t{when:%Y-%m-%dT%H:%M:%SZ}",
        f"request_sha256\t{hashlib.sha256(request_doc).hexdigest()}",
        f"exit_code\t{result.exit_code}",
        f"stdout\t{base64.b64encode(result.stdout).decode('ascii')}",
    ]
    body = "".join(line + "\n" for line in lines)
    mac = hmac.new(bytes.fromhex(v["keyhex"]), body.encode("ascii"), hashlib.sha256).hexdigest()
    return f"{v['host']}.kbfix-answer.txt", body + f"hmac\t{mac}\n"


def answer_scripts(scripts: list[Path], hosts: list[EmulatedHost], out_dir: Path, *, on: str | None = None,
                   collected: datetime | None = None) -> list[Path]:
    """Answer each script on the fixture host it names (or on host `on`), then write the answer
    files into `out_dir` (nothing is written when any script fails). Raises ScriptError, or
    KeyError naming a host the fixtures lack."""
    by_name = {h.name.lower(): h for h in hosts}
    answers: list[tuple[str, str]] = []
    for script in scripts:  # every script answered before any file is written
        text = script.read_text(encoding="ascii")
        target = (on or script_values(text)["host"]).lower()
        if target not in by_name:
            raise KeyError(f"{script.name}: no fixture host {target!r}")
        answers.append(answer_script(text, by_name[target], collected=collected))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, answer in answers:
        path = out_dir / name
        path.write_text(answer, encoding="ascii", newline="")
        written.append(path)
    return written
