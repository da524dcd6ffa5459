"""What travels through the broker: the task arguments and the worker's answer.

A task carries `(host name, check_mode, request document)`, the request document being
`remoting.agent_protocol.encode_request` text (op names and base64 arguments; no endpoint, no
account, no password). The answer is JSON: `{"ok": true, "response": <agent response document>}`
or `{"ok": false, "error": {"type": <remoting error class>, "message", "fault_code", "code",
"subcode", "op_ids"}}`. The controller rebuilds the response with `decode_response` (so a
worker's answer passes the same shape checks as an agent's) and re-raises remoting errors by
class name (only classes of `remoting.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import remoting.errors as errs
from remoting.agent_protocol import (
    AgentRequest,
    AgentResponse,
    OpRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    response_document,
)

Answer = dict[str, Any]


def request_doc(ops: Sequence[OpRequest]) -> str:
    """The v1 request document of `ops` as text. Raises ValueError on duplicate op ids."""
    return encode_request(AgentRequest(tuple(ops))).decode("utf-8")


def ops_of(doc: str) -> tuple[OpRequest, ...]:
    """The ops of a request document. Raises RequestFormatError naming the bad line."""
    return decode_request(doc.encode("utf-8")).ops


def answer_ok(resp: AgentResponse) -> Answer:
    """The answer for a decoded agent response."""
    doc = response_document(resp.nonce, resp.host, resp.results, truncated=resp.truncated, elapsed_ms=resp.elapsed_ms)
    return {"ok": True, "response": doc}


def answer_error(exc: BaseException) -> Answer:
    """The answer for a failure: remoting errors keep their class and fields; anything else is
    sent as an AgentError with its type and text (no traceback, no locals)."""
    if isinstance(exc, errs.RemotingError):
        err: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message, "fault_code": exc.fault_code}
        if isinstance(exc, errs.WSManFaultError):
            err.update(code=exc.code, subcode=exc.subcode)
        if isinstance(exc, errs.OutcomeUnknownError):
            err["op_ids"] = list(exc.op_ids)
        return {"ok": False, "error": err}
    return {"ok": False, "error": {"type": "AgentError", "message": f"worker error: {type(exc).__name__}: {exc}"}}


def _error_class(name: object) -> type[errs.RemotingError]:
    cls = getattr(errs, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, errs.RemotingError):
        return cls
    return errs.AgentError


def is_answer(value: object) -> TypeGuard[Mapping[str, Any]]:
    """True for a value of one of the two answer shapes (`{"ok": bool, …}`); False for anything
    else, e.g. the exception of a task whose answer the worker could not store."""
    return isinstance(value, Mapping) and isinstance(value.get("ok"), bool)


def response_of(answer: object, *, host: str) -> AgentResponse:
    """The AgentResponse in a worker's answer, or raise the remoting error it carries.

    Raises AgentError for an answer that is not one of the two shapes above."""
    if not is_answer(answer):
        raise errs.AgentError("the worker's answer is not a kbfix answer", host=host)
    if answer["ok"]:
        doc = answer.get("response")
        if not isinstance(doc, Mapping) or not isinstance(doc.get("nonce"), str):
            raise errs.AgentError("the worker's answer has no agent response", host=host)
        return decode_response(encode_response(doc), doc["nonce"], host=host)
    err = answer.get("error")
    if not isinstance(err, Mapping):
        raise errs.AgentError("the worker's answer has no error detail", host=host)
    cls = _error_class(err.get("type"))
    message = str(err.get("message") or "error reported by the worker")
    code = err.get("fault_code") if isinstance(err.get("fault_code"), int) else None
    if issubclass(cls, errs.OutcomeUnknownError):
        ids = err.get("op_ids")
        raise cls(message, host=host, op_ids=tuple(str(i) for i in ids) if isinstance(ids, list) else ())
    if issubclass(cls, errs.WSManFaultError):
        raise cls(message, host=host, fault_code=code, code=err.get("code"), subcode=err.get("subcode"))
    raise cls(message, host=host, fault_code=code)
