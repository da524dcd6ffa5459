"""Offline answer files: their format, how the lab writes one, and how the controller verifies one.

An answer file (ASCII, LF line ends, TAB-separated; written by `collect.ps1`):

    kbfix-offline-answer<TAB>1
    host<TAB><inventory name the script was exported for>
    nonce<TAB><the export's 32-hex nonce; also the agent request's nonce>
    computer<TAB><[Environment]::MachineName where it ran>
    collected<TAB><UTC time, yyyy-MM-ddTHH:mm:ssZ>
    request_sha256<TAB><sha256 hex of the embedded request document>
    exit_code<TAB><the agent's exit code>
    stdout<TAB><base64 of the agent's framed output, UTF-8>
    hmac<TAB><HMAC-SHA256 hex over every line above, each ending in LF, with the host's answer key>

`verify_answer` refuses, with the reason in words: another format version; a nonce this
controller never exported (foreign); a host not in that export; a signature that does not match
(tampered, or signed with another export's key); a request other than the one exported; an answer
from another computer; an answer collected before the export or older than `max_age`; an agent
that failed or whose framed response is not protocol v1 for this nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kbfix.offline.keystore import ExportRecord, answer_key, load_export, load_key
from remoting.agent_protocol import AgentResponse, decode_response
from remoting.errors import AgentError

ANSWER_VERSION = 1
DEFAULT_MAX_AGE = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=10)
NETBIOS_MAX = 15
_FIELDS = ("host", "nonce", "computer", "collected", "request_sha256", "exit_code", "stdout")


class AnswerRefused(Exception):
    """An answer kbfix will not assess. `kind` is `answer_refused` (the runner reports the host
    failed with this message); `reason` is the short cause (`tampered`, `stale`, `foreign`, ...)."""

    kind = "answer_refused"

    def __init__(self, host: str, reason: str, message: str) -> None:
        super().__init__(f"offline answer refused ({reason}): {message}")
        self.host = host
        self.reason = reason
        self.hresult: str | None = None


@dataclass(frozen=True)
class Answer:
    """A parsed (not yet verified) answer file."""

    path: Path
    fields: dict[str, str]
    body: bytes
    mac: str

    @property
    def host(self) -> str:
        """The `host` line (the inventory name the script was exported for), or empty."""
        return self.fields.get("host", "")


@dataclass(frozen=True)
class VerifiedAnswer:
    """An answer that passed every check: the decoded agent response, when and where it was collected."""

    host: str
    path: Path
    nonce: str
    computer: str
    collected: datetime
    request: bytes
    response: AgentResponse


def parse_answer(path: Path) -> Answer:
    """Read an answer file. Raises AnswerRefused (reason `format`) when it is not one."""
    name = Path(path).name
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnswerRefused(name, "format", f"{path}: not a readable ASCII answer file: {exc}") from exc
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].split("\t") != ["kbfix-offline-answer", str(ANSWER_VERSION)]:
        got = lines[0][:40] if lines else ""
        raise AnswerRefused(name, "version", f"{path}: line 1 is {got!r}, expected answer format "
                                             f"kbfix-offline-answer {ANSWER_VERSION}")
    fields: dict[str, str] = {}
    body_end = None
    mac = None
    pos = len(lines[0]) + 1
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            pos += 1
            continue
        key, sep, value = line.partition("\t")
        if not sep:
            raise AnswerRefused(name, "format", f"{path}:{n}: expected NAME<TAB>VALUE")
        if key == "hmac":
            body_end, mac = pos, value.strip()
            break
        if key in fields:
            raise AnswerRefused(name, "format", f"{path}:{n}: {key} given twice")
        fields[key] = value
        pos += len(line) + 1
    missing = [f for f in _FIELDS if f not in fields]
    if mac is None or body_end is None or missing:
        raise AnswerRefused(fields.get("host", name), "format",
                            f"{path}: incomplete answer (missing {', '.join(missing) or 'hmac'})")
    return Answer(Path(path), fields, text[:body_end].encode("ascii"), mac)


def verify_answer(answer: Answer, state: Path, *, expected_host: str, expected_computer: str | None = None,
                  now: datetime | None = None, max_age: timedelta = DEFAULT_MAX_AGE) -> VerifiedAnswer:
    """Check every property listed in the module docstring. Raises AnswerRefused; returns the
    verified answer with its decoded response."""
    f = answer.fields
    host = f["host"]
    if host != expected_host:
        raise AnswerRefused(expected_host, "foreign", f"{answer.path.name} answers for host {host!r}, not {expected_host!r}")
    record: ExportRecord | None = load_export(state, f["nonce"])
    key = load_key(state)
    if record is None or key is None:
        raise AnswerRefused(host, "foreign", f"export {f['nonce'][:12]!r} was not made by this controller "
                                             f"(no record in {Path(state) / 'offline'})")
    exported = record.hosts.get(host)
    if exported is None:
        raise AnswerRefused(host, "foreign", f"export {record.nonce[:12]} has no script for {host}")
    want = hmac.new(answer_key(key, record.nonce, host), answer.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, answer.mac.lower()):
        raise AnswerRefused(host, "tampered", f"{answer.path.name}: the signature does not match: the file was "
                                              "changed after it was written, or signed for another export or host")
    if f["request_sha256"] != exported.request_sha256:
        raise AnswerRefused(host, "tampered", "the script's embedded request was changed before it ran")
    computer = f["computer"].strip()
    expected = (expected_computer or exported.computer_name).upper()
    # [Environment]::MachineName is the NetBIOS name: at most 15 characters (MS docs "Naming
    # conventions in Active Directory for computers, domains, sites, and OUs").
    if computer.upper()[:NETBIOS_MAX] != expected[:NETBIOS_MAX]:
        raise AnswerRefused(host, "foreign", f"collected on computer {computer!r}, not {expected!r}: "
                                             "the script ran on the wrong server")
    try:
        collected = datetime.strptime(f["collected"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise AnswerRefused(host, "format", f"collected time {f['collected']!r} is not yyyy-MM-ddTHH:mm:ssZ") from exc
    now = now or datetime.now(timezone.utc)
    if collected < record.created - CLOCK_SKEW or collected > now + CLOCK_SKEW:
        raise AnswerRefused(host, "stale", f"collected at {f['collected']}, outside the export's lifetime "
                                           f"(exported {record.created:%Y-%m-%dT%H:%M:%SZ}); check the server's clock")
    if now - collected > max_age:
        days = (now - collected).total_seconds() / 86400
        raise AnswerRefused(host, "stale", f"collected at {f['collected']}, {days:.1f} days ago (older than "
                                           f"{max_age.total_seconds() / 86400:g} days): export and collect again")
    try:
        stdout = base64.b64decode(f["stdout"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AnswerRefused(host, "format", "stdout is not base64") from exc
    try:
        response = decode_response(stdout, record.nonce, host=host)
    except AgentError as exc:
        raise AnswerRefused(host, "agent", f"the agent's answer is unusable (exit code {f['exit_code']}): "
                                           f"{exc.message if hasattr(exc, 'message') else exc}") from exc
    if response.host.get("computer_name") and str(response.host["computer_name"]).upper() != computer.upper():
        raise AnswerRefused(host, "tampered", "the agent's computer name differs from the answer's")
    return VerifiedAnswer(host, answer.path, record.nonce, computer, collected, exported.request, response)


def find_answers(directory: Path) -> dict[str, Path]:
    """`{host: path}` of the `*.kbfix-answer.txt` files in `directory` (host from the file name).
    Raises FileNotFoundError when the folder does not exist."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--answers {directory}: no such folder")
    suffix = ".kbfix-answer.txt"
    return {p.name[: -len(suffix)]: p for p in sorted(directory.glob(f"*{suffix}"))}
