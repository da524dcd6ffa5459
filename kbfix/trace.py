"""Agent traces (`--trace DIR` on doctor, check and plan): per host, every agent request and its
decoded answer, so a real server's behaviour can be read, shared and turned into a lab fixture
(`kbfix lab fixture-from-trace`, winlab/from_trace.py).

One file per host, `DIR/<host>.trace.json`, rewritten after each exchange:

    {"kbfix_trace": 1, "host": "WSUS01", "command": "check", "exchanges": [
      {"at": "2026-11-28T21:00:00Z", "seconds": 0.041,
       "request": {"limit": 16777216, "nonce": "<redacted>",
                   "ops": [{"id": "1", "name": "file.info", "args": {"path": ["C:\\\\..."]}}]},
       "response": {"protocol": 1, "nonce": "<redacted>", "host": {...}, "results": [...], ...},
       "error": null, "phase": "run"}]}

A session that cannot be opened is recorded too (`phase: open`, `request`/`response` null,
`error` with its kind: `unreachable`, `auth`, `quota`, `certificate`, ...).

Argument values are text when they are UTF-8, else `{"b64": ...}`. Redaction changes nothing
but secrets and nonces: every nonce becomes `<redacted>`, the host's password (wherever it
appears, in any string) becomes `***`, and so does the value of any key that names a secret
(`password`, `token`, ...). The wrapper is a session factory for `kbfix.run.playbook_engine.PlaybookEngine`,
so the runner does not know tracing exists.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from remoting.agent_protocol import AgentResponse, OpRequest, op

TRACE_VERSION = 1
REDACTED_NONCE = "<redacted>"
REDACTED_MARK = "***"
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|api[_-]?key|private[_-]?key", re.I)
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


class TraceError(ValueError):
    """A trace file that cannot be read: names the file and what is wrong."""


def trace_file_name(host: str) -> str:
    """`WSUS01.trace.json`; characters outside `[A-Za-z0-9_.-]` become `_`."""
    return _NAME_RE.sub("_", host) + ".trace.json"


def _arg_json(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return {"b64": base64.b64encode(value).decode("ascii")}


def request_json(ops: Sequence[OpRequest], limit: int | None = None) -> dict[str, Any]:
    """The trace form of a request (nonce already redacted)."""
    return {
        "limit": limit,
        "nonce": REDACTED_NONCE,
        "ops": [{"id": o.id, "name": o.name, "args": {k: [_arg_json(v) for v in vs] for k, vs in o.args.items()}}
                for o in ops],
    }


def ops_from_json(items: Sequence[Any]) -> list[OpRequest]:
    """Rebuild the ops of a traced request. Raises TraceError (bad shape) or ValueError (bad op)."""
    import base64

    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("args", {}), dict):
            raise TraceError("an op of the traced request is not an object with args")
        args: dict[str, Any] = {}
        for key, values in item.get("args", {}).items():
            args[key] = [base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v) for v in values]
        out.append(op(str(item.get("id")), str(item.get("name")), **args))
    return out


def response_json(resp: AgentResponse) -> dict[str, Any]:
    """The trace form of a decoded response (nonce redacted; results as the agent wrote them)."""
    results = []
    for r in resp.results:
        item: dict[str, Any] = {"id": r.id, "op": r.op, "ok": r.ok}
        if r.ok:
            item["data"] = r.data if r.data is not None else {}
        else:
            err = r.error
            item["error"] = {"kind": err.kind, "message": err.message, "hresult": err.hresult} if err else None
        results.append(item)
    return {"protocol": 1, "nonce": REDACTED_NONCE, "host": dict(resp.host), "results": results,
            "truncated": resp.truncated, "elapsed_ms": resp.elapsed_ms}


def redact(value: Any, secrets: Sequence[str] = ()) -> Any:
    """`value` with every string occurrence of `secrets` replaced by `***` and the values of
    secret-named keys replaced; everything else unchanged."""
    live = [s for s in secrets if s]
    if isinstance(value, dict):
        return {k: (REDACTED_MARK if _SECRET_KEY.search(str(k)) and value[k] is not None else redact(v, live))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, live) for v in value]
    if isinstance(value, str):
        for s in live:
            value = value.replace(s, REDACTED_MARK)
        return value
    return value


class Tracer:
    """Writes the trace files of one command run into `directory` (created). Thread-safe: each
    host's exchanges are kept in memory and its file is rewritten atomically after each one."""

    def __init__(self, directory: Path, command: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.command = command
        self._lock = threading.Lock()
        self._exchanges: dict[str, list[dict[str, Any]]] = {}

    def record(self, host: str, ops: Sequence[OpRequest] | None, limit: int | None, response: AgentResponse | None,
               error: BaseException | None, seconds: float, secrets: Sequence[str] = ()) -> Path:
        """Add one exchange for `host` and rewrite its file; returns the file path. `ops` None
        records a session that could not be opened (`phase: open`, the error only)."""
        exchange = {
            "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(seconds, 6),
            "phase": "open" if ops is None else "run",
            "request": None if ops is None else request_json(ops, limit),
            "response": response_json(response) if response is not None else None,
            "error": None if error is None else {"type": type(error).__name__, "kind": getattr(error, "kind", None),
                                                 "message": str(error)},
        }
        exchange = redact(exchange, secrets)
        with self._lock:
            items = self._exchanges.setdefault(host, [])
            items.append(exchange)
            doc = {"kbfix_trace": TRACE_VERSION, "host": host, "command": self.command, "exchanges": list(items)}
            path = self.directory / trace_file_name(host)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1, ensure_ascii=False)
            os.replace(tmp, path)
        return path


class TracingSession:
    """Wraps one agent session (context manager with `run(ops, ...)`) and records each run."""

    def __init__(self, inner: Any, tracer: Tracer, host: str, secrets: Sequence[str] = ()) -> None:
        self._inner = inner
        self._tracer = tracer
        self._host = host
        self._secrets = tuple(secrets)

    def __enter__(self) -> TracingSession:
        started = time.monotonic()
        try:
            self._inner.__enter__()
        except Exception as exc:  # recorded (refused, rejected, quota, ...) and re-raised unchanged
            self._tracer.record(self._host, None, None, None, exc, time.monotonic() - started, self._secrets)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._inner.__exit__(exc_type, exc, tb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run(self, ops: Sequence[OpRequest], **kwargs: Any) -> AgentResponse:
        """Run on the inner session and record the request and its answer (or error)."""
        started = time.monotonic()
        limit = getattr(self._inner, "response_limit", None)
        try:
            resp: AgentResponse = self._inner.run(ops, **kwargs)
        except Exception as exc:
            self._tracer.record(self._host, ops, limit, None, exc, time.monotonic() - started, self._secrets)
            raise
        self._tracer.record(self._host, ops, limit, resp, None, time.monotonic() - started, self._secrets)
        return resp


def endpoint_secrets(endpoint: Any) -> list[str]:
    """The secret strings of an endpoint (its password), for redaction."""
    pw = getattr(endpoint, "password", None)
    reveal = getattr(pw, "reveal", None)
    value = reveal() if callable(reveal) else (pw if isinstance(pw, str) else None)
    return [value] if value else []


def tracing_factory(tracer: Tracer, inner: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A session factory (`PlaybookEngine(session_factory=...)`) whose sessions are traced."""
    if inner is None:
        from remoting.session import AgentSession

        inner = AgentSession
    real = inner

    def factory(endpoint: Any, **kwargs: Any) -> TracingSession:
        return TracingSession(real(endpoint, **kwargs), tracer, endpoint.host, endpoint_secrets(endpoint))

    return factory


def with_trace(engine: Any, directory: Path | None, command: str) -> Any:
    """`engine` (a `PlaybookEngine`) whose sessions are traced into `directory`; unchanged when
    `directory` is None. The CLI's one-line hook for `--trace DIR`."""
    if directory is None:
        return engine
    engine._session_factory = tracing_factory(Tracer(directory, command), engine._session_factory)
    return engine


TRACE_HELP = ("Write per host the agent requests and decoded answers (secrets and nonces redacted) into this "
              "folder; `kbfix lab fixture-from-trace DIR` turns them into a lab fixture.")
