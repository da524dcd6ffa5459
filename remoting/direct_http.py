"""A requests transport adapter that speaks HTTP/1.1 over one kept-alive `http.client`
connection, for the lean WinRM path (`remoting.lean_http`: Basic and NTLM, HTTP and HTTPS).

requests' HTTPAdapter goes through urllib3's pool manager, connection pool, retry object and
response wrapper for every message: ~0.3 ms of CPU per WS-Man request on top of http.client's
own ~0.1 ms, and a host costs 5-6 requests. A WinRM session talks to one endpoint over one
connection (NTLM authenticates the connection itself), so this adapter keeps exactly one
`http.client.HTTP(S)Connection` and nothing else. It keeps `remoting.bounded_http`'s two bounds
(its `_Watch` and watchdog): a byte cap per answer (`AnswerTooLargeError`) and a total time per
request and answer (`bounded_http.timed_out()` tells why a read failed), and raises the
exceptions HTTPAdapter raises for the same failures, so `remoting.wsman_client.map_exception`
reads them the same way: `ConnectTimeout`, `ReadTimeout`, `SSLError`, `ConnectionError` (with
the OS error, e.g. ConnectionRefusedError or socket.gaierror, as its cause and first argument).

TLS: the certificate is verified against `verify` (a CA bundle path, or certifi's bundle for
True, as requests does with trust_env off) with host name checking; `verify=False` turns both
off. The answer is always read whole (bounded) before `send` returns.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import certifi
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import NewConnectionError

from remoting import bounded_http
from remoting.bounded_http import _WATCHDOG, DEFAULT_MAX_BODY, AnswerTooLargeError, _current, _Watch

_READ_CHUNK = 64 * 1024


class _Raw:
    """What `Response.raw` offers here: the connection's socket as it was when the answer came
    (lean_http reads the TLS certificate from it for NTLM channel binding)."""

    def __init__(self, sock: Any) -> None:
        self.connection = self
        self.sock = sock


class DirectAdapter(BaseAdapter):
    """One kept-alive connection to one endpoint; answers capped at `max_body` bytes and cut
    after `total_s` seconds (request and answer)."""

    def __init__(self, *, max_body: int = DEFAULT_MAX_BODY, total_s: float = 60.0) -> None:
        super().__init__()
        self.max_body = max_body
        self.total_s = total_s
        self._conn: http.client.HTTPConnection | None = None
        self._key: tuple[str, str, int, str] | None = None
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # one request at a time on the one connection

    # ------------------------------------------------------------------ the connection

    def _connection(self, scheme: str, host: str, port: int, verify: Any, connect_s: float | None) -> http.client.HTTPConnection:
        key = (scheme, host, port, str(verify))
        if self._conn is not None and self._key == key:
            if self._conn.sock is None or not _dropped(self._conn.sock):
                return self._conn
            # The service closed the idle connection (as urllib3 checks before reusing one).
        self._drop()
        # A plain connection object for both schemes: for https the socket is wrapped here after
        # the TCP connect (see _connect), so the two phases time out with their own errors.
        conn = http.client.HTTPConnection(host, port, timeout=connect_s)
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

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        """POST `request` and return its answer, read whole. Raises the requests exceptions
        HTTPAdapter raises for the same failures, or AnswerTooLargeError."""
        if cert is not None or proxies:
            raise ValueError("DirectAdapter sends without client certificates or proxies")
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        url = urlsplit(request.url or "")
        scheme = url.scheme.lower()
        port = url.port or (443 if scheme == "https" else 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        watch = _Watch(time.monotonic() + self.total_s)
        _current.watch = _current.last = watch
        _WATCHDOG.add(watch)
        with self._lock:
            try:
                conn = self._connection(scheme, url.hostname or "", port, verify, connect_s)
                watch.attach(conn)  # type: ignore[arg-type]  # anything with .sock
                if conn.sock is None:
                    self._connect(conn, request, read_s)
                assert conn.sock is not None
                conn.sock.settimeout(read_s)
                answer, body, sock = self._exchange(conn, request, path, watch)
            except BaseException:
                self._drop()
                raise
            finally:
                watch.finish()
                _current.watch = None
            if answer.will_close:
                self._drop()
        return self._response(request, answer, body, sock)

    def _connect(self, conn: http.client.HTTPConnection, request: requests.PreparedRequest, read_s: float | None) -> None:
        """TCP connect (its errors as HTTPAdapter raises them), then for https the TLS handshake
        under the read timeout: a listener that accepts and never answers is a read timeout, as
        with urllib3."""
        try:
            conn.connect()
        except socket.gaierror as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        except TimeoutError as exc:
            raise requests.exceptions.ConnectTimeout(exc, request=request) from exc
        except ConnectionRefusedError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        except OSError as exc:
            cause = NewConnectionError(conn, f"failed to establish a new connection: {exc}")  # type: ignore[arg-type]
            raise requests.exceptions.ConnectionError(cause, request=request) from exc
        if self._tls is None:
            return
        assert conn.sock is not None
        try:
            conn.sock.settimeout(read_s)
            conn.sock = self._tls.wrap_socket(conn.sock, server_hostname=conn.host)
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except TimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc, request=request) from exc
        except OSError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc

    def _exchange(self, conn: http.client.HTTPConnection, request: requests.PreparedRequest, path: str,
                  watch: _Watch) -> tuple[http.client.HTTPResponse, bytes, Any]:
        try:
            body = request.body if isinstance(request.body, (bytes, str)) or request.body is None else b"".join(request.body)  # type: ignore[arg-type]
            conn.request(request.method or "POST", path, body=body, headers=dict(request.headers))
            answer = conn.getresponse()
            sock = conn.sock
            chunks: list[bytes] = []
            seen = 0
            while True:
                data = answer.read(_READ_CHUNK)
                if not data:
                    break
                seen += len(data)
                if seen > self.max_body:
                    raise AnswerTooLargeError(f"answer larger than {self.max_body} bytes")
                chunks.append(data)
        except AnswerTooLargeError:
            raise
        except ssl.SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except TimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc, request=request) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        return answer, b"".join(chunks), sock

    def _response(self, request: requests.PreparedRequest, answer: http.client.HTTPResponse, body: bytes,
                  sock: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(answer.getheaders())
        response.reason = answer.reason
        response.raw = _Raw(sock)
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]
        response.url = request.url or ""
        response.request = request
        response.connection = self  # type: ignore[assignment]  # (requests declares an HTTPAdapter)
        return response


def _dropped(sock: socket.socket) -> bool:
    """True when an idle kept-alive connection was closed by the other end (readable: EOF or
    bytes nobody asked for)."""
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


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


def install(session: requests.Session, *, max_body: int = DEFAULT_MAX_BODY, total_s: float) -> None:
    """Mount a DirectAdapter for http:// and https:// on `session` (idempotent); the session
    reads nothing from the environment (`bounded_http.install`)."""
    bounded_http.install(session, max_body=max_body, total_s=total_s, adapter_class=DirectAdapter)
