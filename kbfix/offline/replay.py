"""Feeding verified offline answers to the runner: a session that answers from a file and an
engine that marks every piece of evidence as collected offline.

`check --answers DIR` runs the ordinary `run_check` with `OfflineEngine`: gather, assess, link,
store and report are the online code path; only the transport differs. A host without an answer
file, or whose answer is refused, fails with the reason (kind `answer_refused` / `no_answer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from kbfix.offline.answers import (
    DEFAULT_MAX_AGE,
    AnswerRefused,
    VerifiedAnswer,
    find_answers,
    parse_answer,
    verify_answer,
)
from kbfix.run.playbook_engine import PlaybookEngine
from remoting.agent_protocol import AgentRequest, AgentResponse, OpRequest, encode_request
from remoting.errors import CheckModeViolation


class NoAnswer(Exception):
    """No answer file for a host in the answers folder (the host was not collected)."""

    kind = "unreachable"  # nothing was learned about the host: reported like a host WinRM cannot reach
    hresult: str | None = None


class AnsweredSession:
    """A read-only 'session' whose one request is answered by a verified offline answer.

    `run(ops)` returns the recorded response when `ops` encode to exactly the exported request
    document; otherwise it raises AnswerRefused (the playbooks changed since the export)."""

    def __init__(self, answer: VerifiedAnswer, *, check_mode: bool = True) -> None:
        self.answer = answer
        self.check_mode = check_mode

    def __enter__(self) -> AnsweredSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def close(self) -> None:
        """Nothing to close."""

    def run(self, ops: Sequence[OpRequest], **_kw: Any) -> AgentResponse:
        """The recorded answer to `ops` (read-only ops only)."""
        mutating = [o.id for o in ops if o.mutating]
        if mutating:
            raise CheckModeViolation(f"offline answers are read-only: refusing op(s) {', '.join(mutating)}",
                                     host=self.answer.host)
        limit = AgentRequest(()).limit
        doc = encode_request(AgentRequest(tuple(ops), nonce=self.answer.nonce, limit=limit))
        if doc != self.answer.request:
            raise AnswerRefused(self.answer.host, "outdated", "the playbooks ask for other probes than the "
                                                              "exported script ran: export and collect again")
        return self.answer.response


@dataclass(frozen=True)
class _Endpoint:
    host: str


class OfflineEngine(PlaybookEngine):
    """A `PlaybookEngine` whose sessions are the verified answers in `answers_dir`; every
    evidence item gets `note` "collected offline (...)" and `observed_at` = collection time."""

    def __init__(self, answers_dir: Path, state: Path, *, max_age: timedelta = DEFAULT_MAX_AGE,
                 now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(session_factory=self._session, **kwargs)
        self.answers_dir = Path(answers_dir)
        self.state = Path(state)
        self.max_age = max_age
        self.now = now
        self.files = find_answers(self.answers_dir)
        self._verified: dict[str, VerifiedAnswer] = {}
        self._computer: dict[str, str | None] = {}

    def expect_computer(self, host: str, computer: str | None) -> None:
        """Override the computer name an answer for `host` must come from (inventory var)."""
        self._computer[host] = computer

    def _session(self, endpoint: Any, *, check_mode: bool = True, **_kw: Any) -> AnsweredSession:
        host = endpoint.host
        path = self.files.get(host)
        if path is None:
            raise NoAnswer(f"no offline answer in {self.answers_dir} (expected {host}.kbfix-answer.txt)")
        verified = verify_answer(parse_answer(path), self.state, expected_host=host,
                                 expected_computer=self._computer.get(host), now=self.now, max_age=self.max_age)
        self._verified[host] = verified
        return AnsweredSession(verified, check_mode=check_mode)

    def assess(self, session: Any, host: Any) -> Any:
        """The online assessment, with the collection mode in every evidence item."""
        a = super().assess(session, host)
        answer: VerifiedAnswer = session.answer
        note = (f"collected offline: {answer.path.name}, computer {answer.computer}, "
                f"collected {answer.collected:%Y-%m-%dT%H:%M:%SZ}, export {answer.nonce[:12]}")
        findings = []
        for f in a.findings:
            ev = [e.model_copy(update={"note": f"{e.note}; {note}" if e.note else note,
                                       "observed_at": answer.collected}) for e in f.evidence]
            findings.append(f.model_copy(update={"evidence": ev}))
        return a.model_copy(update={"findings": findings})


def offline_hosts(hosts: Sequence[Any], answered: set[str]) -> list[Any]:
    """The hosts for an offline check: a host with an answer file that the inventory gives no
    endpoint (no credentials, WinRM closed) gets one naming it, since no connection is made."""
    out = []
    for h in hosts:
        if getattr(h, "endpoint", None) is None and h.name in answered:
            h = replace(h, endpoint=_Endpoint(h.name), skipped_reason=None)
        out.append(h)
    return out
