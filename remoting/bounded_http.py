"""Bounded HTTP for the WS-Man client: a cap on each answer's size and on its total time.

pywinrm's transport reads every answer whole through requests, and requests' read timeout
bounds each socket read, not the answer: a service that answers with a huge body costs that
much memory, and one that trickles a byte at a time holds the session (and its thread and
socket) for as long as it likes. `install()` mounts an adapter on pywinrm's requests session
that

- counts the body as requests reads it and, past `max_body` bytes, closes the connection and
  raises `AnswerTooLargeError`;
- shuts the socket down when a request and its whole answer take longer than `total_s`
  seconds (one watchdog thread per adapter, not a timer per request); the read then fails and
  `timed_out()` tells the caller why.

The response is left unread until requests (or an auth hook such as requests_ntlm, which needs
the raw socket for channel binding) reads it, exactly as without the adapter.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.response import is_fp_closed

# One WS-Man answer is bounded by the MaxEnvelopeSize the client sends (pywinrm: 150 KiB,
# [MS-WSMV] 2.2.4.19); NTLM sealing and base64 framing add little. 8 MiB leaves room for any
# real answer and still bounds a hostile one.
DEFAULT_MAX_BODY = 8 * 1024 * 1024  # bytes

_current = threading.local()  # per sending thread: the watch of its request in flight / last request


class AnswerTooLargeError(requests.exceptions.ConnectionError):
    """The answer's body passed the byte cap; the connection was closed."""


class _Watch:
    """One request in flight: its connection (once known), its deadline, whether it fired."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.fired = False
        self.done = False
        self._lock = threading.Lock()

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self.conn = conn
            if self.fired:
                self._shut()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            self._shut()

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self.conn = None  # the watch may sit in the watchdog's heap until its deadline

    def _shut(self) -> None:
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires watches whose deadline passed (a heap of deadlines).

    One per process (`_WATCHDOG`), shared by every adapter: a thread per host session cost a
    thread start and a wake-up per request. The thread is woken only when a new deadline is
    earlier than every pending one; finished watches are dropped when their deadline comes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, watch: _Watch) -> None:
        with self._cond:
            earliest = not self._heap or watch.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (watch.deadline, next(self._seq), watch))
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="kbfix-http-watchdog", daemon=True)
                self._thread.start()
            elif earliest:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # finished: nothing to watch
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _d, _s, watch = heapq.heappop(self._heap)
                    if not watch.done:
                        watch.fire()
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)


_WATCHDOG = _Watchdog()


class _WatchedMixin:
    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _cap(raw: Any, max_body: int, watch: _Watch) -> None:
    """Count the body bytes `raw` (a urllib3 HTTPResponse) hands out and finish `watch` when the
    body is done. Patched on the instance, so `raw` stays a urllib3 HTTPResponse: requests_ntlm
    reads the TLS certificate from it for channel binding (CBT) only when it is one."""
    seen = 0
    read, read_chunked, release_conn, close = raw.read, raw.read_chunked, raw.release_conn, raw.close

    def count(data: bytes) -> bytes:
        nonlocal seen
        seen += len(data)
        if seen > max_body:
            watch.finish()
            close()
            raise AnswerTooLargeError(f"answer larger than {max_body} bytes")
        return data

    def capped_read(amt: int | None = None, *args: Any, **kwargs: Any) -> bytes:
        data = count(read(amt, *args, **kwargs))
        if amt is None or not data or is_fp_closed(raw._fp):
            watch.finish()
        return data

    def capped_read_chunked(amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        try:
            for chunk in read_chunked(amt, decode_content=decode_content):
                yield count(chunk)
        finally:
            watch.finish()

    def finish_release() -> None:
        watch.finish()
        release_conn()

    def finish_close() -> None:
        watch.finish()
        close()

    raw.read, raw.read_chunked, raw.release_conn, raw.close = capped_read, capped_read_chunked, finish_release, finish_close


class BoundedAdapter(HTTPAdapter):
    """An HTTPAdapter whose answers are capped at `max_body` bytes and whose requests, answer
    included, are cut after `total_s` seconds."""

    def __init__(self, *, max_body: int = DEFAULT_MAX_BODY, total_s: float = 60.0) -> None:
        self.max_body = max_body
        self.total_s = total_s
        self._watchdog = _WATCHDOG
        self._pools: dict[tuple[str, str, str, bool], Any] = {}
        super().__init__()

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> Any:
        """HTTPAdapter's pool for the request, looked up once per (URL scheme and host, TLS
        settings): a WinRM session talks to one endpoint, and the lookup (proxy selection, URL
        parsing, pool key) cost about 0.1 ms per request. Proxies are never used (install() turns
        the environment off and pywinrm sets none)."""
        url = request.url or ""
        key = ("/".join(url.split("/", 3)[:3]), str(verify), str(cert), bool(proxies))
        pool = self._pools.get(key)
        if pool is None or getattr(pool, "pool", True) is None:  # (a closed pool has no queue)
            pool = self._pools[key] = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        return pool

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """HTTPAdapter's response, less the cookie jar (a WinRM service sets no cookies and the
        extraction parsed the URL several times per answer)."""
        response = requests.Response()
        response.status_code = resp.status
        response.headers = requests.structures.CaseInsensitiveDict(resp.headers)
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else (req.url or "")
        response.request = req
        response.connection = self
        return response

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """As HTTPAdapter's, with pools whose connections report to the request's watch."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        """Send as HTTPAdapter does, under the total deadline; the body is counted as it is read."""
        watch = _Watch(time.monotonic() + self.total_s)
        _current.watch = _current.last = watch
        self._watchdog.add(watch)
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        except BaseException:
            watch.finish()
            raise
        finally:
            _current.watch = None
        _cap(response.raw, self.max_body, watch)
        return response

    def close(self) -> None:
        """Close the pools (the shared watchdog keeps running for other sessions)."""
        self._pools.clear()
        super().close()


def install(session: requests.Session, *, max_body: int = DEFAULT_MAX_BODY, total_s: float,
            adapter_class: Callable[..., BaseAdapter] | None = None) -> None:
    """Mount a BoundedAdapter (or `adapter_class`, built with the same `max_body` bytes and
    `total_s` seconds, e.g. direct_http.DirectAdapter) for http:// and https:// on `session` and
    stop it reading settings from the environment (idempotent)."""
    if getattr(session, "_kbfix_bounded", False):
        return
    # pywinrm sets proxies, CA and credentials explicitly; with trust_env requests would also
    # read the process environment on every request (proxies, REQUESTS_CA_BUNDLE, .netrc):
    # about 1 ms of CPU per host, and settings kbfix did not choose.
    session.trust_env = False
    adapter = (adapter_class or BoundedAdapter)(max_body=max_body, total_s=total_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session._kbfix_bounded = True  # type: ignore[attr-defined]


def timed_out() -> bool:
    """True when the last request this thread sent was cut by its total deadline."""
    watch = getattr(_current, "last", None)
    return bool(watch is not None and watch.fired)
