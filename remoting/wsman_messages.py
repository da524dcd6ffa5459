"""The WS-Management messages kbfix sends, built from fixed templates, and a fast, defused parser
for the answers.

kbfix uses six Windows Remote Shell operations ([MS-WSMV] 3.1.4): Create (a cmd shell), Command,
Send (stdin), Receive, Signal (terminate) and Delete. Each request is a SOAP 1.2 envelope whose
header carries the WS-Addressing and WS-Management fields [MS-WSMV] 2.2.4 requires of every
request: wsa:To, wsa:ReplyTo (anonymous), wsa:Action, wsa:MessageID, wsman:ResourceURI
(`…/windows/shell/cmd`), wsman:MaxEnvelopeSize, wsman:OperationTimeout, wsman:Locale and, for an
existing shell, the wsman:SelectorSet `ShellId`. The bodies follow the rsp: types of
[MS-WSMV] 2.2.4: Shell (2.2.4.37; Create, options WINRS_NOPROFILE / WINRS_CODEPAGE), CommandLine
(2.2.4.7; Command, options WINRS_CONSOLEMODE_STDIN / WINRS_SKIP_CMD_SHELL), Send/Stream (2.2.4.40),
Receive/DesiredStream (2.2.4.26, 3.1.4.14), Signal (2.2.4.38, code `…/signal/terminate`,
2.2.5.6; 3.1.4.12) and the empty body of the WS-Transfer Delete. The field set and order are
those of pywinrm's `Protocol` (which builds them through xmltodict), less what carries nothing here:
the XML declaration, six namespace declarations the envelopes never use and p:DataLocale. The text
is produced by string templates, which costs a few microseconds
instead of about a millisecond per message.

Answers are parsed with the standard library's expat with defusedxml's protections: a DOCTYPE,
an entity declaration or an external entity reference raise `UnsafeXmlError`; a body larger
than `MAX_ANSWER_BYTES` is refused unparsed. Only the elements kbfix reads are collected
(ShellId selector, CommandId, Stream, CommandState, ExitCode, RelatesTo).
"""

from __future__ import annotations

import base64
import functools
import os
import random
import uuid
import xml.parsers.expat
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = _RSP + "/Command"
ACTION_SEND = _RSP + "/Send"
ACTION_RECEIVE = _RSP + "/Receive"
ACTION_SIGNAL = _RSP + "/Signal"
SIGNAL_TERMINATE = _RSP + "/signal/terminate"  # [MS-WSMV] 2.2.5.6 SignalCodeEnumeration
STATE_DONE = _RSP + "/CommandState/Done"  # [MS-WSMV] 2.2.4.9 CommandStateType
MAX_ENVELOPE_SIZE = 153600  # bytes, announced in wsman:MaxEnvelopeSize (pywinrm's value, WinRM 1.1's 150 KB)
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # as remoting.bounded_http.DEFAULT_MAX_BODY

_HEAD = (
    # No XML declaration: an XML 1.0 document without one is UTF-8, which the envelope is.
    # Only the namespaces the envelope uses (pywinrm also declares xsd, xsi, b, n, x and cfg).
    '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    f'xmlns:rsp="{_RSP}">'
    "<env:Header><a:To>{to}</a:To>"
    '<a:ReplyTo><a:Address mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous'
    "</a:Address></a:ReplyTo>"
    f'<w:MaxEnvelopeSize mustUnderstand="true">{MAX_ENVELOPE_SIZE}</w:MaxEnvelopeSize>'
    "<a:MessageID>uuid:{mid}</a:MessageID>"
    # w:Locale (optional, mustUnderstand false) keeps fault texts in English; pywinrm's
    # p:DataLocale only formats WMI data, which a shell never returns: left out.
    '<w:Locale mustUnderstand="false" xml:lang="en-US"/>'
    "<w:OperationTimeout>PT{timeout}S</w:OperationTimeout>"
    f'<w:ResourceURI mustUnderstand="true">{SHELL_URI}</w:ResourceURI>'
    '<a:Action mustUnderstand="true">{action}</a:Action>'
)
_SELECTOR = '<w:SelectorSet><w:Selector Name="ShellId">{shell}</w:Selector></w:SelectorSet>'


@dataclass(frozen=True)
class Message:
    """One request envelope: `text` (UTF-8 XML) and its `message_id` (`uuid:…`, for RelatesTo)."""

    text: str
    message_id: str


#: `_HEAD` cut at its per-message fields: the text before `to`, between `to` and the MessageID,
#: and the rest as a template of the timeout and action.
_HEAD_TO, _, _rest = _HEAD.partition("{to}")
_HEAD_MID, _, _HEAD_TAIL = _rest.partition("{mid}")


@functools.lru_cache(maxsize=64)
def _head_tail(action: str, timeout_s: int) -> str:
    # The header text after the MessageID per (action, timeout): formatted once, not per message.
    return _HEAD_TAIL.format(timeout=int(timeout_s), action=action)


#: Where MessageIDs come from. WS-Addressing asks a MessageID to be unique (the answer's
#: RelatesTo names it), not secret; `uuid.uuid4()` reads os.urandom per message, a system call
#: that lets go of the GIL, which a fleet's ~100 threads then wait for (cost, issue 19). A
#: generator seeded from os.urandom, seeded anew in a forked child (its parent's state would
#: repeat there), gives the same version 4 UUIDs without it.
_MESSAGE_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _MESSAGE_IDS.seed(os.urandom(32)))


def message_id() -> str:
    """A random (version 4, RFC 4122) UUID as text, for wsa:MessageID."""
    return str(uuid.UUID(int=_MESSAGE_IDS.getrandbits(128), version=4))


def _envelope(to: str, action: str, timeout_s: int, shell_id: str | None, options: str, body: str) -> Message:
    mid = message_id()
    sel = _SELECTOR.format(shell=escape(shell_id)) if shell_id is not None else ""
    return Message(f"{_HEAD_TO}{escape(to)}{_HEAD_MID}{mid}{_head_tail(action, timeout_s)}{sel}{options}"
                   f"</env:Header><env:Body>{body}</env:Body></env:Envelope>", "uuid:" + mid)


@functools.lru_cache(maxsize=64)
def _options(pairs: tuple[tuple[str, str], ...]) -> str:
    return "<w:OptionSet>" + "".join(f"<w:Option Name={quoteattr(k)}>{escape(v)}</w:Option>" for k, v in pairs) + "</w:OptionSet>"


@functools.lru_cache(maxsize=16)
def _arguments(args: tuple[str, ...]) -> str:
    # Cached: every host gets the same command line (its -EncodedCommand argument is ~1.5 KB to escape).
    return "".join(f"<rsp:Arguments>{escape(a)}</rsp:Arguments>" for a in args)


def create(to: str, timeout_s: int, *, codepage: int, noprofile: bool, idle_timeout_s: int | None) -> Message:
    """WS-Transfer Create of a cmd shell ([MS-WSMV] 3.1.4 Remote Shell, body rsp:Shell 2.2.4.37): stdin in,
    stdout/stderr out, `codepage` (WINRS_CODEPAGE), no user profile when `noprofile`, and an
    IdleTimeOut (xs:duration, whole seconds) when given."""
    opts = _options((("WINRS_NOPROFILE", "TRUE" if noprofile else "FALSE"), ("WINRS_CODEPAGE", str(int(codepage)))))
    idle = f"<rsp:IdleTimeOut>PT{int(idle_timeout_s)}S</rsp:IdleTimeOut>" if idle_timeout_s else ""
    body = f"<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>{idle}</rsp:Shell>"
    return _envelope(to, ACTION_CREATE, timeout_s, None, opts, body)


def command(to: str, timeout_s: int, shell_id: str, program: str, args: list[str]) -> Message:
    """Command ([MS-WSMV] 3.1.4.11, body rsp:CommandLine 2.2.4.7): `program` in rsp:Command and
    each argument in its own rsp:Arguments element, started without cmd.exe
    (WINRS_SKIP_CMD_SHELL) with console-mode stdin (WINRS_CONSOLEMODE_STDIN)."""
    opts = _options((("WINRS_CONSOLEMODE_STDIN", "TRUE"), ("WINRS_SKIP_CMD_SHELL", "TRUE")))
    argx = _arguments(tuple(args))
    body = f"<rsp:CommandLine><rsp:Command>{escape(program)}</rsp:Command>{argx}</rsp:CommandLine>"
    return _envelope(to, ACTION_COMMAND, timeout_s, shell_id, opts, body)


def send(to: str, timeout_s: int, shell_id: str, command_id: str, chunk: bytes, *, end: bool) -> Message:
    """Send ([MS-WSMV] 3.1.4.13, rsp:Send with one rsp:Stream 2.2.4.40 named stdin): `chunk` as
    base64 (which needs no XML escaping); End="true" closes the command's stdin."""
    return send_base64(to, timeout_s, shell_id, command_id, base64.b64encode(chunk), end=end)


def send_base64(to: str, timeout_s: int, shell_id: str, command_id: str, data: bytes, *, end: bool) -> Message:
    """`send` of a chunk given as its base64 text `data` (ASCII bytes, as `base64.b64encode`
    gives it: `remoting.chunking.split_base64`). Raises ValueError for text that could end the
    Stream element (`<`, `&`) or is not ASCII: the text goes into the envelope unescaped (a full
    alphabet check of ~30 KB cost more than encoding it)."""
    if b"<" in data or b"&" in data:
        raise ValueError("Send data must be base64 text")
    body = (
        f'<rsp:Send><rsp:Stream Name="stdin" CommandId={quoteattr(command_id)} '
        f'End="{"true" if end else "false"}">{data.decode("ascii")}</rsp:Stream></rsp:Send>'
    )
    return _envelope(to, ACTION_SEND, timeout_s, shell_id, "", body)


def receive(to: str, timeout_s: int, shell_id: str, command_id: str) -> Message:
    """Receive ([MS-WSMV] 3.1.4.14, rsp:Receive 2.2.4.26): stdout and stderr of `command_id`;
    the service holds the request up to `timeout_s` (OperationTimeout) waiting for output."""
    body = f"<rsp:Receive><rsp:DesiredStream CommandId={quoteattr(command_id)}>stdout stderr</rsp:DesiredStream></rsp:Receive>"
    return _envelope(to, ACTION_RECEIVE, timeout_s, shell_id, "", body)


def signal_terminate(to: str, timeout_s: int, shell_id: str, command_id: str) -> Message:
    """Signal ([MS-WSMV] 3.1.4.12, rsp:Signal 2.2.4.38) with code terminate (2.2.5.6) for `command_id`."""
    body = f"<rsp:Signal CommandId={quoteattr(command_id)}><rsp:Code>{SIGNAL_TERMINATE}</rsp:Code></rsp:Signal>"
    return _envelope(to, ACTION_SIGNAL, timeout_s, shell_id, "", body)


def delete(to: str, timeout_s: int, shell_id: str) -> Message:
    """WS-Transfer Delete of the shell ([MS-WSMV] 3.1.4 Remote Shell): an empty body."""
    return _envelope(to, ACTION_DELETE, timeout_s, shell_id, "", "")


# --------------------------------------------------------------------------------------- answers


class UnsafeXmlError(ValueError):
    """The answer carries a DTD, an entity declaration or an external reference (refused, as
    defusedxml does), or is larger than `MAX_ANSWER_BYTES`."""


class AnswerXmlError(ValueError):
    """The answer is not well-formed XML."""


@dataclass
class Answer:
    """What kbfix reads from a WS-Man answer. `streams`: (name, base64 text) in document order;
    `command_state`: the CommandState State URI or None; `exit_code`: ExitCode text or None."""

    relates_to: str | None = None
    shell_id: str | None = None
    command_id: str | None = None
    streams: list[tuple[str, str]] = field(default_factory=list)
    command_state: str | None = None
    exit_code: str | None = None

    def stream_bytes(self, name: str) -> bytes:
        """The decoded bytes of every stream named `name`, concatenated. Raises AnswerXmlError for bad base64."""
        try:
            return b"".join(base64.b64decode(text) for n, text in self.streams if n == name and text)
        except ValueError as exc:
            raise AnswerXmlError(f"stream {name} is not base64") from exc


_WANTED = frozenset({"RelatesTo", "Selector", "CommandId", "Stream", "ExitCode"})


def _forbid(*_args: object) -> None:
    raise UnsafeXmlError("DTDs and entities are refused in WS-Man answers")


def _forbid_external(_context: str, _base: str | None, _system_id: str | None, _public_id: str | None) -> int:
    raise UnsafeXmlError("external entities are refused in WS-Man answers")


def parse_answer(data: bytes) -> Answer:
    """Parse one WS-Man answer body (UTF-8 XML bytes) into an `Answer`.

    Raises UnsafeXmlError (DTD/entity/external reference/oversize) or AnswerXmlError (not
    well-formed). Elements are matched by local name in any namespace prefix."""
    if len(data) > MAX_ANSWER_BYTES:
        raise UnsafeXmlError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    answer = Answer()
    stack: list[tuple[str, dict[str, str]]] = []
    text: list[str] = []
    parser = xml.parsers.expat.ParserCreate()
    # defusedxml's protections: no DOCTYPE (and so no internal subset), no entity declarations,
    # no external entities; parameter entities are never parsed.
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid_external
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True

    def start(name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(":")[2]
        if local == "CommandState":
            answer.command_state = attrs.get("State")
        elif local in _WANTED:
            stack.append((local, attrs))
            text.clear()

    def end(name: str) -> None:
        if not stack or name.rpartition(":")[2] != stack[-1][0]:
            return
        local, attrs = stack.pop()
        value = "".join(text).strip()
        text.clear()
        if local == "Stream":
            answer.streams.append((attrs.get("Name", ""), value))
        elif local == "Selector":
            if attrs.get("Name") == "ShellId":
                answer.shell_id = value
        elif local == "CommandId":
            answer.command_id = value
        elif local == "ExitCode":
            answer.exit_code = value
        elif local == "RelatesTo":
            answer.relates_to = value

    def chars(data_: str) -> None:
        if stack:
            text.append(data_)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise AnswerXmlError(f"not well-formed XML: {exc}") from None
    return answer
