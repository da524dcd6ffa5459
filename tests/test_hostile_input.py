"""Hostile input never crashes kbfix, never injects into its reports, and stays bounded in memory.

1. A lab host whose SoftwareDistribution.log carries markup (`<script>`, Jinja `{{ }}` and
   `{% raw %}`), control characters, a 1 MiB line and invalid UTF-16: the check completes, the
   evidence lines are cut at `max_line_chars` (4096, PROTOCOL.md `log.scan`) and flagged, the
   HTML report shows the markup as text and no Jinja expression from the log is evaluated.
2. A hostile "WinRM service" (stdlib http.server on 127.0.0.1) answering pywinrm with malformed
   XML, binary junk, entity bombs (billion laughs, quadratic blowup), external entities, a huge
   body or a trickled one: `AgentSession` raises a typed `RemotingError`, quickly and within a
   memory bound, and no local file content leaks. Huge answers are refused at the byte cap and
   trickled ones cut at the total time (remoting/bounded_http.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import defusedxml.ElementTree as ET
import pytest

from inventory import load_inventory
from kbfix.report import build_document, render
from kbfix.run import RunOptions, run_check
from kbfix.run.playbook_engine import PlaybookEngine
from kbfix.store import AuditStore
from playbooks.model import Status
from remoting.agent_protocol import op
from remoting.endpoint import Endpoint, Secret, Timeouts
from remoting.errors import RemotingError, UnreachableError
from remoting.retry import RetryPolicy
from remoting.session import AgentSession
from winlab.fixtures import demo_site
from winlab.hoststate import BytesContent, FileEntry
from winlab.lab import Lab

SD_LOG = r"C:\Program Files\Update Services\LogFiles\SoftwareDistribution.log"
MAX_LINE_CHARS = 4096  # the agent's log.scan default (remoting/PROTOCOL.md)
# 7**7: a number that appears nowhere unless someone evaluates the Jinja expression from the log.
JINJA_EXPR = "{{ 7*7*7*7*7*7*7 }}"
JINJA_VALUE = str(7**7)
SCRIPT = "<script>alert('kbfix-xss')</script>"
# Placeholders replaced by invalid UTF-16LE code units after encoding: a lone high surrogate and
# a lone low surrogate (what a torn write or a bad converter leaves in a Windows log).
LONE_HIGH, LONE_LOW = "\u2603", "\u2604"


def hostile_log() -> bytes:
    """SoftwareDistribution.log as UTF-16LE with BOM (as WSUS writes it), hostile in every way."""
    head = "2008-07-30 09:00:02.468 UTC\tError\tw3wp.12\t"
    lines = [
        "2008-07-30 08:59:58.312 UTC\tInfo\tWSusService.15\tEventLogEventReporter.ReportEvent\tEventId=12032",
        head + "ClientImplementation.SyncUpdates\tSystem.ArgumentException: Item has already been added. "
        + SCRIPT + " <img src=x onerror=alert(1)> " + JINJA_EXPR + " {% raw %} {{ config }} {%- endraw"
        + " Key being added: '8862'",
        head + "SoapUtilities.CreateException\tThrowException: \x00\x01\x07\x08\x0b\x1b[31mred\x1b[0m\x7f"
        + f"\u202egnp.exe {LONE_HIGH} {LONE_LOW} ErrorCode=InternalServerError ]]> <!-- -->",
        # One line of 1 MiB that matches the signature in its first few hundred characters.
        head + "ClientImplementation.SyncUpdates\tSystem.ArgumentException: <b>" + "A" * (1 << 20) + "</b>",
        "2008-07-30 09:10:00.125 UTC\tInfo\tWsusService.15\tCatalogSyncAgentCore\tCatalog sync succeeded",
    ]
    data = b"\xff\xfe" + "\r\n".join(lines).encode("utf-16-le") + b"\r\x00\n\x00"
    data = data.replace(LONE_HIGH.encode("utf-16-le"), b"\x00\xd8").replace(LONE_LOW.encode("utf-16-le"), b"\x00\xdc")
    return data + b"\x41"  # and an odd trailing byte: half a code unit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore.in_dir(tmp_path / "state") as s:
        yield s


def test_hostile_log_lines_are_bounded_and_shown_as_text(tmp_path: Path, store: AuditStore) -> None:
    hosts = [h for h in demo_site() if h.name == "WSUS-SP1"]
    hosts[0].state.put_file(FileEntry(SD_LOG, BytesContent(hostile_log())))
    engine = PlaybookEngine()
    with Lab(hosts) as lab:
        targets = load_inventory([lab.write_inventory(tmp_path / "inventory.yaml")]).select(None)
        out = run_check(targets, engine, store, RunOptions(forks=1, host_deadline_s=60))
        assert lab.open_shells() == 0
    (result,) = out.results
    assert result.error is None, result.error
    assert result.status is Status.NON_COMPLIANT  # the signature is still recognised
    lines = [ln for f in result.findings for ev in f.evidence for ln in ev.lines]
    assert lines, "no log evidence"
    assert all(len(ln.text) <= MAX_LINE_CHARS for ln in lines), max(len(ln.text) for ln in lines)
    assert any(ln.cut for ln in lines), "the 1 MiB line is not flagged as cut"
    texts = "\n".join(ln.text for ln in lines)
    assert SCRIPT in texts and JINJA_EXPR in texts  # kept verbatim in the data, as evidence

    doc = build_document(out.info, out.results, engine.advisories())
    as_json = render(doc, "json")
    assert len(as_json) < 256 * 1024, len(as_json)  # bounded: the log held more than 1 MiB
    json.loads(as_json)  # and still valid JSON (no lone surrogates, control characters escaped)
    html = render(doc, "html").decode("utf-8")
    assert SCRIPT not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html  # shown as text
    assert "{{ 7*7*7*7*7*7*7 }}" in html  # shown, not evaluated
    for fmt in ("html", "md", "csv", "junit", "json"):
        assert JINJA_VALUE not in render(doc, fmt).decode("utf-8"), fmt
    # Control characters never reach a terminal or an XML parser raw (HTML shows control pictures).
    for fmt in ("html", "md", "csv", "junit"):
        text = render(doc, fmt).decode("utf-8")
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text), fmt
    ET.fromstring(render(doc, "junit"))  # still well-formed XML
    md = render(doc, "md").decode("utf-8")
    for line in md.splitlines():
        if "kbfix-xss" in line:  # markup only inside code (indented block or code span): inert
            assert line.startswith("    ") or re.search(r"`[^`]*kbfix-xss[^`]*`", line), line


# ---- a hostile WinRM service -------------------------------------------------------------------

_NS = ('xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
       'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
       'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"')
_BODIES = {
    "Create": '<rsp:Shell><rsp:ShellId>S-1</rsp:ShellId></rsp:Shell>'
              '<w:SelectorSet><w:Selector Name="ShellId">S-1</w:Selector></w:SelectorSet>',
    "Command": "<rsp:CommandResponse><rsp:CommandId>C-1</rsp:CommandId></rsp:CommandResponse>",
}
SECRET_MARKER = "KBFIX-LOCAL-FILE-SECRET-7f3a"
HUGE_BYTES = 48 << 20  # 48 MiB: far above any WS-Man envelope (WinRM's MaxEnvelopeSizekb is 500 KiB by default)
MEMORY_BOUND = 80 << 20  # bytes the client may allocate while refusing one hostile answer


def envelope(action: str, relates_to: str, body: str = "") -> bytes:
    """A plain SOAP answer to `action` (RelatesTo echoes the request's MessageID, as pywinrm checks)."""
    inner = body or _BODIES.get(action, "")
    return (f'<s:Envelope {_NS}><s:Header><a:RelatesTo>{relates_to}</a:RelatesTo></s:Header>'
            f"<s:Body>{inner}</s:Body></s:Envelope>").encode()


def hostile_body(kind: str, secret_file: Path) -> bytes | Iterator[bytes]:
    """The hostile answer of `kind`: bytes, or an iterator of chunks for a body too big to hold."""
    if kind == "malformed":
        return f'<s:Envelope {_NS}><s:Body><rsp:Shell><rsp:ShellId>S-1</rsp:Shel'.encode()
    if kind == "binary":
        return bytes(range(256)) * 64
    if kind == "billion_laughs":  # 10**9 expansions of "lol" from a few hundred bytes
        ents = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
        return (f'<?xml version="1.0"?><!DOCTYPE s:Envelope [{ents}]><s:Envelope {_NS}><s:Body>'
                '<w:Selector Name="ShellId">&a9;</w:Selector><rsp:CommandId>&a9;</rsp:CommandId>'
                '<rsp:Stream Name="stdout">&a9;</rsp:Stream></s:Body></s:Envelope>').encode()
    if kind == "quadratic":  # one 50 kB entity referenced 50 000 times: 2.5 GB expanded
        x = "x" * 50_000
        return (f'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY a "{x}">]><s:Envelope {_NS}><s:Body>'
                f'<w:Selector Name="ShellId">{"&a;" * 50_000}</w:Selector></s:Body></s:Envelope>').encode()
    if kind == "external_entity":  # XXE: the client must never read a local file into the answer
        return (f'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "{secret_file.as_uri()}">]>'
                f'<s:Envelope {_NS}><s:Body><w:Selector Name="ShellId">&x;</w:Selector>'
                '<rsp:CommandId>&x;</rsp:CommandId><rsp:Stream Name="stdout">&x;</rsp:Stream>'
                "</s:Body></s:Envelope>").encode()
    if kind == "huge":
        block = b"A" * (1 << 20)
        head = f'<s:Envelope {_NS}><s:Body><rsp:Shell><rsp:ShellId>S-1</rsp:ShellId><x>'.encode()
        return iter([head, *(block for _ in range(HUGE_BYTES >> 20)), b"</x></rsp:Shell></s:Body></s:Envelope>"])
    raise ValueError(kind)


class HostileWinRM:
    """A stdlib HTTP server on 127.0.0.1 that speaks just enough WS-Man for pywinrm (Basic auth
    accepted blindly) and answers the `target` action with `body` (HTTP `status`)."""

    def __init__(self, target: str, body: bytes | Iterator[bytes], status: int = 200) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                request = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action_m = re.search(rb"<a:Action[^>]*>[^<]*/([A-Za-z]+)</a:Action>", request)
                action = action_m.group(1).decode() if action_m else "Other"
                msg_m = re.search(rb"<a:MessageID>([^<]*)</a:MessageID>", request)
                outer.seen.append(action)
                if action != target:
                    self._answer(200, envelope(action, msg_m.group(1).decode() if msg_m else ""))
                elif isinstance(body, bytes):
                    self._answer(status, body)
                else:  # a streamed answer, never held in memory whole
                    self.send_response(status)
                    self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for chunk in body:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        pass  # the client hung up early: what a careful client does

            def _answer(self, code: int, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="hostile-winrm", daemon=True)

    def __enter__(self) -> HostileWinRM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def endpoint(self) -> Endpoint:
        """Basic over plain HTTP (allowed for this loopback test) with short timeouts."""
        return Endpoint(host="HOSTILE", address="127.0.0.1", port=self.server.server_address[1], scheme="http",
                        transport="basic", username="kbfix", password=Secret("not-a-real-password"),
                        allow_unencrypted=True, timeouts=Timeouts(connect=2, operation=1, read=5, command=10))


def attempt(ep: Endpoint) -> Callable[[], None]:
    """Open a session and run one read-only agent request (what a check does first)."""

    def go() -> None:
        with AgentSession(ep, retry=RetryPolicy(attempts=2, wait_min_s=0.01, wait_max_s=0.01)) as s:
            s.run([op("1", "env.expand", text="%COMPUTERNAME%")])

    return go


def refused_within_bounds(server: HostileWinRM, run: Callable[[], None]) -> tuple[RemotingError, int, float]:
    """Run `run` against the hostile server; returns (the error, peak bytes allocated, seconds)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(RemotingError) as err:
            run()
        return err.value, tracemalloc.get_traced_memory()[1], time.monotonic() - started
    finally:
        tracemalloc.stop()


BAD_BODIES = ["malformed", "binary", "billion_laughs", "quadratic", "external_entity"]


@pytest.mark.parametrize("target", ["Create", "Command", "Receive"])
@pytest.mark.parametrize("kind", BAD_BODIES)
def test_hostile_soap_answers_raise_typed_errors_in_bounded_memory(kind: str, target: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_MARKER, encoding="utf-8")
    with HostileWinRM(target, hostile_body(kind, secret)) as server:
        err, peak, seconds = refused_within_bounds(server, attempt(server.endpoint()))
    assert target in server.seen  # the hostile answer was actually delivered
    assert err.host == "HOSTILE", err
    assert peak < MEMORY_BOUND, f"{kind} on {target}: {peak / 2**20:.1f} MiB"
    assert seconds < 10, f"{kind} on {target}: {seconds:.1f} s"
    shown = f"{err!s} {err!r} {caplog.text}"
    assert SECRET_MARKER not in shown and "not-a-real-password" not in shown
    assert len(str(err)) < 2000  # an error message never carries the hostile payload whole
    if kind in ("malformed", "binary"):
        assert err.kind == "protocol", err  # MalformedAnswerError: not mistaken for a network fault


def test_hostile_http_500_with_an_entity_bomb_is_unreachable(tmp_path: Path) -> None:
    with HostileWinRM("Create", hostile_body("billion_laughs", tmp_path / "none"), status=500) as server:
        err, peak, _seconds = refused_within_bounds(server, attempt(server.endpoint()))
    assert isinstance(err, UnreachableError) and "HTTP 500" in str(err), err
    assert peak < MEMORY_BOUND




@pytest.mark.parametrize("target", ["Create", "Receive"])
def test_huge_soap_answer_is_refused_in_bounded_memory(target: str, tmp_path: Path) -> None:
    with HostileWinRM(target, hostile_body("huge", tmp_path / "none")) as server:
        err, peak, seconds = refused_within_bounds(server, attempt(server.endpoint()))
    assert err.host == "HOSTILE"
    assert peak < MEMORY_BOUND, f"huge answer to {target}: {peak / 2**20:.1f} MiB"
    assert err.kind == "protocol" and "larger than" in str(err), err
    assert seconds < 10




def test_trickled_answer_is_cut_within_the_timeouts() -> None:
    stop = threading.Event()

    def trickle() -> Iterator[bytes]:
        while not stop.wait(0.5):
            yield b" "

    outcome: dict[str, BaseException] = {}

    def go(ep: Endpoint) -> None:
        try:
            attempt(ep)()
        except BaseException as exc:  # recorded and asserted below
            outcome["error"] = exc

    with HostileWinRM("Create", trickle()) as server:
        ep = dataclasses.replace(server.endpoint(), timeouts=Timeouts(connect=1, operation=1, read=2, command=3))
        worker = threading.Thread(target=go, args=(ep,), name="trickled-session", daemon=True)
        worker.start()
        worker.join(8)  # read 2 s + command 3 s + slack
        still_running = worker.is_alive()
        stop.set()
        worker.join(5)
    assert not still_running, "the session was still reading a trickled answer after 8 s"
    assert isinstance(outcome.get("error"), RemotingError), outcome
