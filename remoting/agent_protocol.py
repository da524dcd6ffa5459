"""Agent protocol v1: the request/response codec between kbfix and its remote agent.

The format is specified in `remoting/PROTOCOL.md`; this module is its only implementation in
Python. Both the client (`remoting.session`) and the lab (`winlab`) use it, and
`remoting/agent.ps1` implements the other side in PowerShell 2.0. How the agent and a request
reach powershell.exe (bootstrap command line, agent sections, minified gzip'd agent, the stdin
stream) is `remoting.agent_delivery`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from remoting.agent_delivery import RequestFormatError, gunzip_bounded
from remoting.answer_shapes import check_host, check_result
from remoting.errors import AgentError, ResponseTooLargeError
from remoting.ops import OPS

PROTOCOL_VERSION = 1
# bytes. windows (issue 13 item 8): 8 MiB keeps the agent well under WinRM 2.0's default
# MaxMemoryPerShellMB of 150, which covers powershell.exe and every installer it starts.
DEFAULT_RESPONSE_LIMIT = 8 * 1024 * 1024

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what rb"\s" matches
_GZIP_MAGIC = b"\x1f\x8b"

ArgScalar = str | int | bool | bytes
ArgValue = ArgScalar | Sequence[ArgScalar]


def _to_bytes(value: ArgScalar) -> bytes:
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"agent op argument of type {type(value).__name__} is not supported")


@dataclass(frozen=True)
class OpRequest:
    """One op in a request: `id` unique in the request, `name` from `remoting.ops.OPS`,
    `args` maps each key to its list of raw values (bytes; UTF-8 for text)."""

    id: str
    name: str
    args: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)

    def text(self, key: str, default: str | None = None) -> str | None:
        """The first value of `key` decoded as UTF-8, or `default`."""
        vals = self.args.get(key)
        return vals[0].decode("utf-8", "replace") if vals else default

    def texts(self, key: str) -> list[str]:
        """All values of `key` decoded as UTF-8 (empty list when absent)."""
        return [v.decode("utf-8", "replace") for v in self.args.get(key, ())]

    def integer(self, key: str, default: int) -> int:
        """The first value of `key` as an int. Raises RequestFormatError when not decimal."""
        vals = self.args.get(key)
        if not vals:
            return default
        try:
            return int(vals[0].decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestFormatError(f"argument {key!r} of op {self.id!r} is not an integer") from exc

    def flag(self, key: str) -> bool:
        """True when `key` is given as `1`."""
        vals = self.args.get(key)
        return bool(vals) and vals is not None and vals[0] == b"1"

    @property
    def mutating(self) -> bool:
        """Whether this op changes host state (from the op table; unknown ops count as mutating)."""
        spec = OPS.get(self.name)
        return True if spec is None else spec.mutating


def op(op_id: str, name: str, /, **args: ArgValue | None) -> OpRequest:
    """Build an OpRequest. Keyword values may be str, int, bool, bytes or a list of them;
    None is dropped. Raises ValueError for a bad id or an op not in the table.
    `op_id` and `name` are positional-only so that ops can take an argument called `name`
    (`registry.values`, `service.status`, `service.restart`)."""
    if not _ID_RE.match(op_id):
        raise ValueError(f"bad op id {op_id!r}")
    if name not in OPS:
        raise ValueError(f"unknown agent op {name!r}")
    norm: dict[str, tuple[bytes, ...]] = {}
    for key, value in args.items():
        if value is None:
            continue
        items: Sequence[Any] = value if isinstance(value, (list, tuple)) else [value]
        norm[key] = tuple(_to_bytes(v) for v in items)
    return OpRequest(op_id, name, norm)


@dataclass(frozen=True)
class AgentRequest:
    """A whole request: a fresh nonce, the response byte limit and the ops in order."""

    ops: tuple[OpRequest, ...]
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    limit: int = DEFAULT_RESPONSE_LIMIT

    @property
    def mutating(self) -> bool:
        """True when any op in the request mutates host state."""
        return any(o.mutating for o in self.ops)


#: (ops tuple, its encoded op lines): the last ops encoded. A check sends the same tuple of
#: frozen ops to every host (kbfix.run.playbook_engine builds it once), so its lines are encoded
#: once (cost, issue 19). The tuple is held, so its id cannot be reused while it is cached;
#: a tuple assignment is atomic, so threads only ever see a matching pair.
_LAST_OPS: tuple[tuple[OpRequest, ...], str] | None = None


def _op_lines(ops: tuple[OpRequest, ...]) -> str:
    global _LAST_OPS
    last = _LAST_OPS
    if last is not None and last[0] is ops:
        return last[1]
    seen: set[str] = set()
    lines: list[str] = []
    for o in ops:
        if o.id in seen:
            raise ValueError(f"duplicate op id {o.id!r}")
        seen.add(o.id)
        lines.append(f"op\t{o.id}\t{o.name}")
        for key, values in o.args.items():
            for v in values:
                lines.append(f"arg\t{key}\t{base64.b64encode(v).decode('ascii')}")
    text = "".join(f"{line}\n" for line in lines)
    _LAST_OPS = (ops, text)
    return text


def encode_request(request: AgentRequest) -> bytes:
    """Serialize a request to the v1 request document (UTF-8 bytes). Raises ValueError on duplicate ids."""
    head = f"kbfix-agent-request\t{PROTOCOL_VERSION}\nnonce\t{request.nonce}\nlimit\t{request.limit}\n"
    return (head + _op_lines(request.ops)).encode("utf-8")


def decode_request(doc: bytes) -> AgentRequest:
    """Parse a v1 request document. Raises RequestFormatError naming the line at fault.
    Unknown op names are kept (the agent answers them with `invalid_args`)."""
    try:
        text = doc.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestFormatError("request document is not UTF-8") from exc
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines or lines[0] != f"kbfix-agent-request\t{PROTOCOL_VERSION}":
        raise RequestFormatError("line 1: expected 'kbfix-agent-request\\t1'")
    nonce, limit = None, DEFAULT_RESPONSE_LIMIT
    ops: list[OpRequest] = []
    cur_args: dict[str, list[bytes]] | None = None
    cur: tuple[str, str] | None = None

    def flush() -> None:
        if cur is not None and cur_args is not None:
            ops.append(OpRequest(cur[0], cur[1], {k: tuple(v) for k, v in cur_args.items()}))

    for n, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        tag = parts[0]
        if tag == "nonce" and len(parts) == 2 and _NONCE_RE.match(parts[1]):
            nonce = parts[1]
        elif tag == "limit" and len(parts) == 2 and parts[1].isdigit():
            limit = int(parts[1])
        elif tag == "op" and len(parts) == 3 and _ID_RE.match(parts[1]):
            flush()
            cur, cur_args = (parts[1], parts[2]), {}
        elif tag == "arg" and len(parts) == 3 and cur_args is not None:
            try:
                value = base64.b64decode(parts[2], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestFormatError(f"line {n}: argument {parts[1]!r} is not base64") from exc
            cur_args.setdefault(parts[1], []).append(value)
        else:
            raise RequestFormatError(f"line {n}: unexpected {tag[:20]!r}")
    flush()
    if nonce is None:
        raise RequestFormatError("request has no valid nonce line")
    ids = [o.id for o in ops]
    if len(ids) != len(set(ids)):
        raise RequestFormatError("duplicate op id in request")
    return AgentRequest(tuple(ops), nonce=nonce, limit=limit)


@dataclass(frozen=True)
class OpError:
    """Why one op failed: kind (see PROTOCOL.md), message, hresult (`0x…` or None)."""

    kind: str
    message: str
    hresult: str | None = None


@dataclass(frozen=True)
class OpResult:
    """The answer to one op: ok with `data`, or not ok with `error`."""

    id: str
    op: str
    ok: bool
    data: dict[str, Any] | None = None
    error: OpError | None = None


@dataclass(frozen=True)
class AgentResponse:
    """A decoded agent response: host info, results in request order, truncation flag."""

    nonce: str
    host: dict[str, Any]
    results: tuple[OpResult, ...]
    truncated: bool = False
    elapsed_ms: int = 0

    def by_id(self) -> dict[str, OpResult]:
        """Results keyed by op id."""
        return {r.id: r for r in self.results}


def response_document(
    nonce: str, host: Mapping[str, Any], results: Iterable[OpResult], *, truncated: bool = False, elapsed_ms: int = 0
) -> dict[str, Any]:
    """Build the JSON-ready response document (the lab's side of the agent)."""
    out = []
    for r in results:
        item: dict[str, Any] = {"id": r.id, "op": r.op, "ok": r.ok}
        if r.ok:
            item["data"] = r.data if r.data is not None else {}
        else:
            err = r.error or OpError("exception", "unknown error")
            item["error"] = {"kind": err.kind, "message": err.message, "hresult": err.hresult}
        out.append(item)
    return {
        "protocol": PROTOCOL_VERSION,
        "nonce": nonce,
        "host": dict(host),
        "results": out,
        "truncated": truncated,
        "elapsed_ms": elapsed_ms,
    }


def encode_response(document: Mapping[str, Any]) -> bytes:
    """Frame a response document as the agent writes it to stdout: base64 of the gzip of the UTF-8
    JSON, in CRLF-separated 76-char lines between the nonce markers."""
    nonce = document["nonce"]
    # Compact separators, as agent.ps1's JSON writer (ConvertTo-AgentJson) writes them.
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    packed = gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)
    payload = base64.b64encode(packed).decode("ascii")
    body = "\r\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    return f"KBFIX-BEGIN-{nonce}\r\n{body}\r\nKBFIX-END-{nonce}\r\n".encode("ascii")


def _json(payload: bytes) -> Any:
    """The JSON document in `payload` (UTF-8), as `json.loads` reads it. pydantic-core's parser
    (jiter, already here for the answer shapes) reads a response ~40% faster; for anything it
    refuses (bad UTF-8, a BOM, lone surrogates, deep nesting, not JSON) `json.loads` decides,
    so the documents read and the error raised are json's (tests/test_remoting_codec.py checks
    that both agree on every document jiter reads). Raises ValueError."""
    try:
        return pydantic_core.from_json(payload)
    except ValueError:
        return json.loads(payload.decode("utf-8"))


def decode_response(stdout: bytes, nonce: str, *, limit: int = DEFAULT_RESPONSE_LIMIT, host: str | None = None) -> AgentResponse:
    """Find the framed response for `nonce` in raw stdout and decode it.

    The payload is base64 of the gzip of the UTF-8 JSON document (base64 of the JSON itself is
    read too: JSON never starts with the gzip magic 1F 8B). Everything outside the markers is
    ignored. Raises ResponseTooLargeError when stdout passes `limit` bytes (×1.4 for base64) or
    the document inflates past `limit`; AgentError when the markers, base64, gzip, JSON or shape
    are wrong.
    """
    if len(stdout) > limit * 4 // 3 + 4096:
        raise ResponseTooLargeError(f"agent response larger than {limit} bytes", host=host)
    begin = f"KBFIX-BEGIN-{nonce}".encode("ascii")
    end = f"KBFIX-END-{nonce}".encode("ascii")
    i = stdout.find(begin)
    j = stdout.find(end, i + len(begin)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise AgentError("agent output has no framed response for this request", host=host)
    b64 = stdout[i + len(begin) : j].translate(None, _WHITESPACE)  # the line breaks (15x faster than re.sub)
    try:
        payload = base64.b64decode(b64, validate=True)
        if payload.startswith(_GZIP_MAGIC):
            try:
                payload = gunzip_bounded(payload, limit, "response")
            except RequestFormatError as exc:
                if "inflates past" in str(exc):
                    raise ResponseTooLargeError(f"agent response larger than {limit} bytes", host=host) from None
                raise AgentError(f"agent response is not valid gzip: {exc}", host=host) from exc
        doc = _json(payload)
    except (binascii.Error, ValueError) as exc:
        raise AgentError(f"agent response is not valid base64 JSON: {exc}", host=host) from exc
    if not isinstance(doc, dict) or doc.get("protocol") != PROTOCOL_VERSION or doc.get("nonce") != nonce:
        raise AgentError("agent response is not protocol v1 or answers another request", host=host)
    results = []
    raw_results = doc.get("results")
    if not isinstance(raw_results, list):
        raise AgentError("agent response has no results list", host=host)
    for item in raw_results:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise AgentError("agent response has a malformed result", host=host)
        op_name, ok, data = str(item.get("op", "")), item.get("ok"), item.get("data")
        if ok is True:
            check_result(op_name, data, host=host)
        err = item.get("error")
        results.append(
            OpResult(
                id=item["id"],
                op=op_name,
                ok=bool(ok),
                data=data if isinstance(data, dict) else None,
                error=OpError(str(err.get("kind", "exception")), str(err.get("message", "")), err.get("hresult"))
                if isinstance(err, dict)
                else None,
            )
        )
    host_info: dict[str, Any] = doc["host"] if isinstance(doc.get("host"), dict) else {}
    check_host(host_info, host=host)
    return AgentResponse(
        nonce=nonce,
        host=host_info,
        results=tuple(results),
        truncated=bool(doc.get("truncated")),
        elapsed_ms=int(doc.get("elapsed_ms") or 0),
    )
