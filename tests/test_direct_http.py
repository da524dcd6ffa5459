"""remoting.direct_http on the wire: answers framed every way HTTP/1.1 allows are read whole,
kept-alive connections are reused, and malformed, cut, oversized or slow answers fail as the
requests exceptions HTTPAdapter raises (which remoting.wsman_client maps).

The "service" is a raw TCP listener on 127.0.0.1 that sends canned bytes, so each framing and
each fault is exact; the full WinRM conversation is covered by tests/test_remoting_lab.py.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from remoting.bounded_http import AnswerTooLargeError
from remoting.direct_http import MAX_HEAD, DirectAdapter

FIELDS = b"Content-Type: application/soap+xml;charset=UTF-8\r\n"


class CannedService:
    """Accepts connections; for each request (head plus Content-Length body) sends the next
    canned answer; a `None` answer closes the connection without a word."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/wsman"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CannedService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        data = b""
        while self.answers:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), b"0"))
            while len(data) < length:
                data += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + data[:length])
            data = data[length:]
            answer = self.answers.pop(0)
            if answer is None:
                return
            conn.sendall(answer)
            if b"connection: close" in answer.lower():
                return


def post(adapter: DirectAdapter, url: str, body: bytes = b"<x/>") -> requests.Response:
    return adapter.post(url, FIELDS + b"Content-Length: %d\r\n" % len(body), body, timeout=(2, 2), verify=True)


@pytest.fixture
def adapter() -> Iterator[DirectAdapter]:
    a = DirectAdapter(max_body=1024, total_s=5)
    yield a
    a.close()


def test_length_chunked_and_eof_framed_answers_are_read_whole(adapter: DirectAdapter) -> None:
    answers: list[bytes | None] = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\nto the end",
    ]
    with CannedService(answers) as svc:
        first = post(adapter, svc.url)
        assert (first.status_code, first.reason, first.content) == (200, "OK", b"hello")
        assert first.headers["x-A"] == "1, 2"  # duplicate fields joined, names case-insensitive
        second = post(adapter, svc.url)
        assert second.content == b"abcde"
        third = post(adapter, svc.url)
        assert (third.status_code, third.content) == (500, b"to the end")
    assert svc.connections == 1  # kept alive until the service closed it
    head = svc.requests[0].split(b"\r\n")
    assert head[0] == b"POST /wsman HTTP/1.1" and head[1].startswith(b"Host: 127.0.0.1:")
    assert svc.requests[0].endswith(b"Content-Length: 4\r\n\r\n<x/>")


def test_a_closed_idle_connection_is_replaced(adapter: DirectAdapter) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with CannedService([ok, None, ok]) as svc:
        assert post(adapter, svc.url).content == b"ok"
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            post(adapter, svc.url)  # the service hangs up on this request without an answer
        assert isinstance(info.value.args[0], http.client.RemoteDisconnected)
        assert post(adapter, svc.url).content == b"ok"
    assert svc.connections == 2


@pytest.mark.parametrize(("answer", "cause"), [
    (b"garbage\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10), http.client.LineTooLong),
])
def test_malformed_cut_and_oversized_heads_are_connection_errors(adapter: DirectAdapter, answer: bytes,
                                                                 cause: type[Exception]) -> None:
    with CannedService([answer, None]) as svc, pytest.raises(requests.exceptions.ConnectionError) as info:
        post(adapter, svc.url)
    assert isinstance(info.value.args[0], cause), info.value.args


def test_a_body_past_the_cap_is_refused(adapter: DirectAdapter) -> None:
    chunk = b"200\r\n" + b"z" * 512 + b"\r\n"  # 512 bytes; the cap is 1024
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
    with CannedService([answer]) as svc, pytest.raises(AnswerTooLargeError):
        post(adapter, svc.url)


def test_refused_and_silent_endpoints_raise_what_http_adapter_raises(adapter: DirectAdapter) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        post(adapter, f"http://127.0.0.1:{port}/wsman")
    assert isinstance(info.value.args[0], ConnectionRefusedError)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/wsman"
        with pytest.raises(requests.exceptions.ReadTimeout):
            adapter.post(url, FIELDS + b"Content-Length: 0\r\n", b"", timeout=(1, 0.5), verify=True)


def test_control_characters_in_the_url_are_refused_before_any_byte(adapter: DirectAdapter) -> None:
    with CannedService([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]) as svc:
        with pytest.raises(http.client.InvalidURL):
            post(adapter, svc.url + "\r\nX-Injected: 1")
        assert svc.requests == []
        assert post(adapter, svc.url).status_code == 200


class TrickleService:
    """Accepts one connection, reads the request, then sends an answer one byte every `every_s`
    seconds (a header that never ends) until told to stop."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/wsman"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TrickleService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        conn, _addr = self._listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not self.stop.wait(self.every_s):
                try:
                    conn.sendall(b"X")
                except OSError:
                    return


def test_a_trickled_answer_is_cut_at_the_total_time() -> None:
    # Every byte comes well within the read timeout; the total time (total_s) still ends it,
    # and bounded_http.timed_out() says so (remoting.wsman_client maps that to "did not complete").
    import time

    from remoting import bounded_http

    adapter = DirectAdapter(max_body=1024, total_s=1.0)
    with TrickleService(every_s=0.1) as svc:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            adapter.post(svc.url, FIELDS + b"Content-Length: 0\r\n", b"", timeout=(2, 2), verify=True)
        took = time.monotonic() - started
    assert 0.9 <= took < 1.6, took
    assert bounded_http.timed_out()
    adapter.close()


def test_a_read_timeout_within_the_total_time_is_not_a_cut() -> None:
    from remoting import bounded_http

    adapter = DirectAdapter(max_body=1024, total_s=10.0)
    with TrickleService(every_s=5.0) as svc, pytest.raises(requests.exceptions.ReadTimeout):
        adapter.post(svc.url, FIELDS + b"Content-Length: 0\r\n", b"", timeout=(2, 0.3), verify=True)
    assert not bounded_http.timed_out()
    adapter.close()


@pytest.mark.parametrize("basic", [True, False])
def test_lean_header_fields_are_those_a_requests_session_would_send(basic: bool) -> None:
    # remoting.lean_http writes its unchanging header fields itself: the same names, values and
    # order as requests prepares for pywinrm's session (Connection: Keep-Alive, as NTLM needs;
    # Content-Type and Content-Length are per message).
    import requests.auth
    import winrm.transport

    from remoting import lean_http

    t = winrm.transport.Transport("http://127.0.0.1:5985/wsman", "user", "pässword", auth_method="basic")
    session = requests.Session()
    session.headers.update(t.default_headers)
    auth = requests.auth.HTTPBasicAuth("user", "pässword") if basic else None
    session.auth = auth
    prepared = session.prepare_request(requests.Request("POST", t.endpoint, data=b"<x/>"))
    expected = {k: v for k, v in prepared.headers.items() if k.lower() not in ("content-type", "content-length")}
    expected["Connection"] = "Keep-Alive"
    ours = lean_http._static_fields(tuple(t.default_headers.items()), auth)
    assert ours == b"".join(b"%s: %s\r\n" % (k.encode(), v.encode("latin-1") if isinstance(v, str) else v)
                            for k, v in expected.items())


class HangUpAfterAnswerService(CannedService):
    """Answers the first request of each connection (kept alive by its headers), then closes it
    while it is idle, as a service ending idle connections does."""

    def _talk(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        self.requests.append(data)
        conn.sendall(self.answers.pop(0) or b"")


def test_a_connection_the_service_closed_while_idle_is_replaced_without_an_error(adapter: DirectAdapter) -> None:
    import time

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with HangUpAfterAnswerService([ok, ok]) as svc:
        assert post(adapter, svc.url).content == b"ok"
        time.sleep(0.2)  # the service's FIN reaches this side
        assert post(adapter, svc.url).content == b"ok"  # on a new connection, not a RemoteDisconnected
    assert svc.connections == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel socket timeouts are used on Linux only")
def test_plain_http_waits_in_the_kernel_and_a_silent_service_still_times_out() -> None:
    # One system call per send and per receive (no poll before each, which lets go of the GIL):
    # the socket is blocking and SO_RCVTIMEO bounds each receive (socket(7)); the read timeout
    # still ends a silent answer, as a ReadTimeout.
    import time

    from remoting.socket_waits import TIMEVAL

    adapter = DirectAdapter(max_body=1024, total_s=10.0)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with CannedService([ok]) as svc:
        assert post(adapter, svc.url).content == b"ok"
        conn = adapter._conn
        assert conn is not None and conn.sock is not None and conn.kernel
        assert conn.sock.gettimeout() is None  # blocking: no poll before each call
        seconds, micro = TIMEVAL.unpack(conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, TIMEVAL.size))
        assert (seconds, micro) == (2, 0)  # the read timeout of `post`
    with TrickleService(every_s=5.0) as silent:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            adapter.post(silent.url, FIELDS + b"Content-Length: 0\r\n", b"", timeout=(2, 0.3), verify=True)
        assert time.monotonic() - started < 1.5
    adapter.close()
