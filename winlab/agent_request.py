"""The request document read the way `remoting/agent.ps1` (`Read-Request`) reads it.

The agent fails a whole request only when the header or the nonce is wrong. A malformed line
after an `op` line (an argument that is not base64, an unknown tag, a wrong field count) marks
THAT op bad: it answers `invalid_args` and the other ops still run. Lines before the first op
that are not `nonce`/`limit` are ignored; duplicate op ids are not checked. The lab answers the
same way (`remoting.agent_protocol.decode_request` is the client's stricter parser).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from remoting.agent_protocol import AgentRequest, OpRequest, RequestFormatError

HEADER = "kbfix-agent-request\t1"
# The agent's own default when a request has no limit line (agent.ps1 Read-Request).
AGENT_DEFAULT_LIMIT = 8388608
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_LIMIT = re.compile(r"^[0-9]{1,18}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ParsedRequest:
    """A request as the agent sees it: the ops in order and, by op position, why an op is bad."""

    request: AgentRequest
    bad: Mapping[int, str] = field(default_factory=dict)


def parse_like_agent(doc: bytes) -> ParsedRequest:
    """Parse a request document as agent.ps1 does. Raises RequestFormatError (the agent's exit 1)
    for text that is not UTF-8, a wrong header line, or no valid nonce."""
    try:
        text = doc.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestFormatError("request document is not UTF-8") from exc
    lines = text.split("\n")
    if not lines or lines[0].rstrip("\r") != HEADER:
        raise RequestFormatError("request document is not kbfix-agent-request version 1")
    nonce: str | None = None
    limit = AGENT_DEFAULT_LIMIT
    ops: list[tuple[str, str, dict[str, list[bytes]]]] = []
    bad: dict[int, str] = {}
    for i, raw in enumerate(lines[1:], start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        f = line.split("\t")
        if f[0] == "nonce" and len(f) == 2 and _NONCE.match(f[1]):
            nonce = f[1]
        elif f[0] == "limit" and len(f) == 2 and _LIMIT.match(f[1]):
            limit = int(f[1])
        elif f[0] == "op" and len(f) == 3 and _ID.match(f[1]):
            ops.append((f[1], f[2], {}))
        elif f[0] == "arg" and len(f) == 3 and ops:
            try:
                value = base64.b64decode(f[2], validate=True)
            except (binascii.Error, ValueError):
                bad[len(ops) - 1] = f"argument '{f[1]}' is not base64"
                continue
            ops[-1][2].setdefault(f[1], []).append(value)
        elif ops:
            bad[len(ops) - 1] = f"unexpected request line {i}"
    if nonce is None:
        raise RequestFormatError("request document has no valid nonce")
    request = AgentRequest(tuple(OpRequest(i, n, {k: tuple(v) for k, v in a.items()}) for i, n, a in ops),
                           nonce=nonce, limit=limit)
    return ParsedRequest(request, bad)
