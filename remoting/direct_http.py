"""A requests transport adapter that speaks HTTP/1.1 over one kept-alive socket, for the lean
WinRM path (`remoting.lean_http`: Basic and NTLM, HTTP and HTTPS).

requests' HTTPAdapter goes through urllib3's pool manager, connection pool, retry object and
response wrapper for every message, and `http.client` itself builds each request with a
`putheader` call per header and parses each answer's header block with the `email` package
(about 0.2 ms of CPU per WS-Man answer, the largest cost of a request; a host costs 5-6). A WinRM
session talks to one endpoint over one connection (NTLM authenticates the connection itself), so
this adapter keeps one socket and

- writes each request as one buffer: the request line and Host, then the caller's header block
  (`post`: lean_http keeps the unchanging headers as bytes per session) and the body;
- parses the answer with llhttp (the C parser of Node.js, through `httptools`): status, headers,
  Content-Length or chunked bodies, keep-alive.

It keeps `remoting.bounded_http`'s two bounds: a byte cap per answer body (`AnswerTooLargeError`;
the header block has its own cap, `MAX_HEAD`) and a total time per request and answer
(`bounded_http.timed_out()` tells why a read failed). As the adapter does every blocking call
itself, the total time is kept without the shared watchdog thread: each connect, send and read
waits at most the time left before the request's deadline (and at most its own timeout), so a
service that trickles its answer is cut at the deadline (a lock, a heap entry and a watch per
request cost ~40 us of CPU per host in the watchdog's bookkeeping). On Linux a plain TCP socket
is blocking and the kernel bounds each send and receive, and a connection is reused after its TCP
state is read (`remoting.socket_waits`: fewer system calls that let go of the GIL). It raises the
exceptions HTTPAdapter raises for the same failures, so `remoting.wsman_client.map_exception`
reads them the same way: `ConnectTimeout`, `ReadTimeout`, `SSLError`, `ConnectionError` (with
the OS error, e.g. ConnectionRefusedError or socket.gaierror, as its cause and first argument; a
malformed, cut or oversized-header answer carries an `http.client.HTTPException` as http.client
would raise it).

TLS: the certificate is verified against `verify` (a CA bundle path, or certifi's bundle for
True, as requests does with trust_env off) with host name checking; `verify=False` turns both
off. The answer is always read whole (bounded) before `post`/`send` returns.
"""

from __future__ import annotations

import datetime
import errno
import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import certifi
import httptools
import requests
from requests.adapters import BaseAdapter
from requests.cookies import cookiejar_from_dict
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import NewConnectionError

from remoting import bounded_http
from remoting.bounded_http import DEFAULT_MAX_BODY, AnswerTooLargeError, _current, _Watch
from remoting.socket_waits import KERNEL_TIMEOUTS, peer_closed, set_kernel_timeout

# Bytes per socket read. Small on purpose: a fleet has ~100 requests in flight, each holding its
# buffer while it waits (64 KiB buffers added ~6 MiB to the peak RSS); most answers fit anyway.
_READ_CHUNK = 16 * 1024
_NOT_MEASURED = datetime.timedelta(0)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")  # http.client's disallowed URL characters
# An answer's status line and headers, bytes. A WinRM answer's are under 1 KiB (an NTLM challenge
# adds a few hundred bytes); http.client allowed 100 lines of 64 KiB each.
MAX_HEAD = 256 * 1024


class _Raw:
    """What `Response.raw` offers here: the connection's socket as it was when the answer came
    (lean_http reads the TLS certificate from it for NTLM channel binding)."""

    def __init__(self, sock: Any) -> None:
        self.connection = self
        self.sock = sock


class _Request:
    """What pywinrm's `Encryption.parse_encrypted_response` reads of `response.request`: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


class DirectResponse(requests.Response):
    """A requests Response filled directly (status, headers, body read whole), without
    `Response.__init__`'s cookie jar and header dict that a WinRM answer never uses; the jar and
    the header dict are made on first use (a Basic conversation reads neither). Duplicate header
    fields are joined with ", " (as urllib3 joins them)."""

    def __init__(self, status: int, reason: str, fields: list[tuple[str, str]], content: bytes, raw: _Raw,
                 request: Any, url: str) -> None:
        # Deliberately not super().__init__(): every attribute it sets is set here, the jar and headers lazily.
        self._content = content
        self._content_consumed = True
        self._next = None
        self.status_code = status
        self._fields = fields
        self.raw = raw
        self.url = url
        self.encoding = None
        self.history = []
        self.reason = reason
        self.elapsed = _NOT_MEASURED
        self.request = request

    @property  # type: ignore[override]
    def headers(self) -> CaseInsensitiveDict[str]:
        """The answer's header fields, case-insensitive (built on first use)."""
        headers = self.__dict__.get("_headers")
        if headers is None:
            headers = CaseInsensitiveDict()
            store = headers._store  # type: ignore[attr-defined]  # (lower name -> (name, value)), requests' own layout
            for name, value in self._fields:
                key = name.lower()
                old = store.get(key)
                store[key] = (name, value) if old is None else (old[0], f"{old[1]}, {value}")
            self.__dict__["_headers"] = headers
        return headers

    @headers.setter
    def headers(self, value: CaseInsensitiveDict[str]) -> None:
        self.__dict__["_headers"] = value

    def __getattr__(self, name: str) -> Any:
        if name == "cookies":  # a WinRM service sets none: the empty jar only when someone asks
            self.cookies = cookiejar_from_dict({})
            return self.cookies
        raise AttributeError(name)


class _Answer:
    """llhttp's callbacks for one answer: status, reason, header fields, body chunks (capped).

    The answer and its parser refer to each other (the parser calls the answer's methods, which
    ask the parser): `release()` breaks that cycle once the answer is read, or every answer's
    body would wait for the garbage collector (under a flood of 150 KB answers the RSS grew
    ~3x as much: tests/test_hostile_hosts.py)."""

    __slots__ = ("chunks", "done", "fields", "head_done", "keep_alive", "max_body", "parser", "reason", "size", "status",
                 "too_large")

    def __init__(self, max_body: int) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.reason = b""
        self.fields: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = self.status = 0
        self.head_done = self.done = self.too_large = self.keep_alive = False

    def feed(self, data: bytes) -> None:
        assert self.parser is not None, "feed after release"
        self.parser.feed_data(data)

    def release(self) -> None:
        self.parser = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("iso-8859-1"), value.decode("iso-8859-1")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.head_done = True
        self.status = self.parser.get_status_code()
        # Asked now: llhttp forgets the message's flags once it is complete. False for HTTP/1.0
        # without keep-alive, `Connection: close`, or a body that runs to the end of the connection.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.max_body:
            self.too_large = True  # raised by the reader: an exception here would be wrapped by httptools
            self.chunks.clear()
        else:
            self.chunks.append(data)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:  # an interim answer (100 Continue): the real one follows
            self.reason, self.fields, self.head_done = b"", [], False
            return
        self.done = True

    def ends_at_eof(self) -> bool:
        """True when the answer's body runs to the end of the connection (no length, not chunked)."""
        names = {name.lower() for name, _v in self.fields}
        return self.head_done and "content-length" not in names and "transfer-encoding" not in names


#: What `bounded_http.timed_out()` reads after a request this module cut at its total deadline.
_EXPIRED = _Watch(0.0)
_EXPIRED.fired = True


class _Conn:
    """One TCP (then TLS) connection: `sock` is None until connected and after `close()`;
    `timeout` is the socket's current timeout (seconds), kept to set it only when it changes;
    `kernel`: the timeout is the kernel's (`remoting.socket_waits`), the socket itself blocking."""

    __slots__ = ("at_deadline", "host", "host_field", "kernel", "port", "sock", "timeout")

    def __init__(self, host: str, port: int, default_port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.timeout: float | None = None
        self.kernel = False
        self.at_deadline = False  # the socket's timeout ends at the request's deadline
        name = f"[{host}]" if ":" in host else host
        self.host_field = (name if port == default_port else f"{name}:{port}").encode("idna")

    def bound(self, limit_s: float | None, deadline: float) -> None:
        """Let the next blocking call on `sock` wait at most `limit_s` seconds (None: no limit of
        its own) and never past `deadline` (monotonic s). Raises TimeoutError at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            _current.last = _EXPIRED
            raise TimeoutError("the request's total time is up")
        self.at_deadline = limit_s is None or left < limit_s
        wait = left if self.at_deadline or limit_s is None else limit_s
        if wait != self.timeout:
            assert self.sock is not None
            if self.kernel:
                set_kernel_timeout(self.sock, wait)
            else:
                self.sock.settimeout(wait)
            self.timeout = wait

    def use_kernel_timeouts(self) -> None:
        """Make the (plain TCP) socket blocking, its waits bounded by the kernel from the next `bound`."""
        assert self.sock is not None
        self.sock.settimeout(None)
        self.kernel = True
        self.timeout = None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class DirectAdapter(BaseAdapter):
    """One kept-alive connection to one endpoint; answers capped at `max_body` bytes and cut
    after `total_s` seconds (request and answer)."""

    def __init__(self, *, max_body: int = DEFAULT_MAX_BODY, total_s: float = 60.0) -> None:
        super().__init__()
        self.max_body = max_body
        self.total_s = total_s
        self._conn: _Conn | None = None
        self._key: tuple[str, str, int, str] | None = None
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # one request at a time on the one connection
        self._urls: dict[str, tuple[str, str, int, bytes]] = {}  # url -> (scheme, host, port, target)

    # ------------------------------------------------------------------ the connection

    def _connection(self, scheme: str, host: str, port: int, verify: Any) -> _Conn:
        key = (scheme, host, port, str(verify))
        if self._conn is not None and self._key == key:
            if self._conn.sock is None or not peer_closed(self._conn.sock):
                return self._conn
            # The service closed the idle connection (as urllib3 checks before reusing one).
        self._drop()
        conn = _Conn(host, port, 443 if scheme == "https" else 80)
        self._conn, self._key = conn, key
        self._tls = _tls_context(verify) if scheme == "https" else None
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Close the connection (a new one is opened on the next request)."""
        self._drop()

    # ------------------------------------------------------------------ sending

    def _target(self, url: str) -> tuple[str, str, int, bytes]:
        parts = self._urls.get(url)
        if parts is None:
            u = urlsplit(url)
            scheme = u.scheme.lower()
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            if _CONTROL.search(target) or _CONTROL.search(u.hostname or ""):
                # Written raw into the request head: refused as http.client refuses them.
                raise http.client.InvalidURL(f"URL can't contain control characters: {url!r}")
            parts = self._urls[url] = (scheme, u.hostname or "", u.port or (443 if scheme == "https" else 80),
                                       target.encode("ascii"))
        return parts

    def post(self, url: str, fields: bytes, body: bytes, *, timeout: Any, verify: Any,
             request: Any = None) -> DirectResponse:
        """POST `body` to `url` with the header block `fields` (`Name: value\\r\\n` lines, Content-Length
        included; Host is added here) and return the answer, read whole. `timeout`: seconds, or
        (connect, read) seconds; `verify` as in requests. The request and its answer take at most
        `total_s` seconds. Raises the requests exceptions HTTPAdapter raises for the same failures
        (`request` goes into them), or AnswerTooLargeError."""
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        scheme, host, port, target = self._target(url)
        deadline = time.monotonic() + self.total_s
        _current.last = None  # `timed_out()` tells about this request from here on
        with self._lock:
            try:
                conn = self._connection(scheme, host, port, verify)
                if conn.sock is None:
                    self._connect(conn, request, connect_s, read_s, deadline)
                sock = conn.sock
                assert sock is not None
                head = b"POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, conn.host_field, fields)
                answer = self._exchange(conn, head + body, request, read_s, deadline)
            except BaseException:
                self._drop()
                raise
            if not answer.keep_alive:
                self._drop()
        return DirectResponse(answer.status, answer.reason.decode("iso-8859-1"), answer.fields,
                              b"".join(answer.chunks), _Raw(sock), request if request is not None else _Request(url), url)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        """The requests adapter interface: POST `request` (its headers and body) through `post`."""
        if cert is not None or proxies:
            raise ValueError("DirectAdapter sends without client certificates or proxies")
        if (request.method or "POST") != "POST":
            raise ValueError("DirectAdapter sends POST requests only (WS-Management)")
        body = request.body if isinstance(request.body, (bytes, str)) or request.body is None else b"".join(request.body)  # type: ignore[arg-type]
        data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        fields = header_fields(request.headers, skip=("host", "content-length"))
        fields += b"Content-Length: %d\r\n" % len(data)
        return self.post(request.url or "", fields, data, timeout=timeout, verify=verify, request=request)

    def _connect(self, conn: _Conn, request: Any, connect_s: float | None, read_s: float | None,
                 deadline: float) -> None:
        """TCP connect (its errors as HTTPAdapter raises them), then for https the TLS handshake
        under the read timeout: a listener that accepts and never answers is a read timeout, as
        with urllib3. Neither waits past `deadline` (monotonic s)."""
        left = deadline - time.monotonic()
        at_deadline = left <= 0 or connect_s is None or left < connect_s
        try:
            if left <= 0:
                raise TimeoutError("the request's total time is up")
            sock = socket.create_connection((conn.host, conn.port), left if at_deadline else connect_s)
        except socket.gaierror as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        except TimeoutError as exc:
            if at_deadline:
                _current.last = _EXPIRED
            raise requests.exceptions.ConnectTimeout(exc, request=request) from exc
        except ConnectionRefusedError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        except OSError as exc:
            cause = NewConnectionError(conn, f"failed to establish a new connection: {exc}")  # type: ignore[arg-type]
            raise requests.exceptions.ConnectionError(cause, request=request) from exc
        try:  # requests are written whole: no Nagle delay (as http.client sets it)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            if exc.errno != errno.ENOPROTOOPT:
                sock.close()
                raise requests.exceptions.ConnectionError(exc, request=request) from exc
        conn.sock, conn.timeout = sock, sock.gettimeout()
        if self._tls is None:
            if KERNEL_TIMEOUTS:
                conn.use_kernel_timeouts()
            return
        try:
            conn.bound(read_s, deadline)
            conn.sock = self._tls.wrap_socket(sock, server_hostname=conn.host)  # (keeps the timeout)
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except TimeoutError as exc:
            if conn.at_deadline:
                _current.last = _EXPIRED
            raise requests.exceptions.ReadTimeout(exc, request=request) from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc

    def _exchange(self, conn: _Conn, data: bytes, request: Any, read_s: float | None, deadline: float) -> _Answer:
        """Write the request, then read and parse one answer (bounded: each socket call waits at
        most `read_s` seconds and never past `deadline`)."""
        sock = conn.sock
        assert sock is not None
        answer = _Answer(self.max_body)
        try:
            if conn.kernel:
                _send_bounded(conn, data, read_s, deadline)
            else:
                conn.bound(read_s, deadline)
                sock.sendall(data)
            seen = 0
            while not answer.done:
                conn.bound(read_s, deadline)
                chunk = sock.recv(_READ_CHUNK)  # (a bytes object, not a zero-filled buffer per request)
                if not chunk:
                    if seen == 0:
                        raise http.client.RemoteDisconnected("Remote end closed connection without response")
                    if not answer.ends_at_eof():
                        raise http.client.IncompleteRead(b"")
                    answer.done = True
                    break
                seen += len(chunk)
                answer.feed(chunk)
                if answer.too_large:
                    raise AnswerTooLargeError(f"answer larger than {self.max_body} bytes")
                if not answer.head_done and seen > MAX_HEAD:
                    raise http.client.LineTooLong(f"header block (over {MAX_HEAD} bytes)")
        except AnswerTooLargeError:
            raise
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: a kernel timeout (EAGAIN, socket(7))
            if conn.at_deadline:
                _current.last = _EXPIRED
            raise requests.exceptions.ReadTimeout(exc, request=request) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            bad = http.client.BadStatusLine(f"malformed HTTP answer: {exc}")
            raise requests.exceptions.ConnectionError(bad, request=request) from exc
        finally:
            answer.release()
        return answer


def _send_bounded(conn: _Conn, data: bytes, read_s: float | None, deadline: float) -> None:
    """`sendall` on a socket with kernel timeouts, each send bounded anew (`_Conn.bound`): a
    blocking send waits up to its timeout and then returns what it sent, so a peer reading slowly
    cannot stretch one sendall past the deadline. Raises TimeoutError or BlockingIOError."""
    sock = conn.sock
    assert sock is not None
    view, sent = memoryview(data), 0
    while sent < len(data):  # almost always one turn: a send takes the whole request
        conn.bound(read_s, deadline)
        sent += sock.send(view[sent:])


def header_fields(headers: Mapping[str, str | bytes], *, skip: Iterable[str] = ()) -> bytes:
    """`headers` as a request's header block (`Name: value\r\n` lines, ISO-8859-1 as HTTP/1.1
    field values are), leaving out the names in `skip` (lower case)."""
    left_out = frozenset(skip)
    return b"".join(b"%s: %s\r\n" % (_latin1(k), _latin1(v)) for k, v in headers.items() if k.lower() not in left_out)


def _latin1(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("iso-8859-1")


_CONTEXTS: dict[str, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _tls_context(verify: Any) -> ssl.SSLContext:
    """A TLS client context per `verify` value (built once: loading a CA bundle costs ~10 ms)."""
    key = str(verify)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            if verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())
            _CONTEXTS[key] = ctx
        return ctx


def install(session: requests.Session, *, max_body: int = DEFAULT_MAX_BODY, total_s: float) -> DirectAdapter:
    """Mount a DirectAdapter for http:// and https:// on `session` (idempotent) and return the
    mounted one; the session reads nothing from the environment (`bounded_http.install`)."""
    bounded_http.install(session, max_body=max_body, total_s=total_s, adapter_class=DirectAdapter)
    adapter = session.get_adapter("http://")
    if not isinstance(adapter, DirectAdapter):
        raise TypeError(f"the session already has another bounded adapter ({type(adapter).__name__})")
    return adapter
