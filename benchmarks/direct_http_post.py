"""Micro-benchmark: client CPU per WS-Man-sized HTTP POST through remoting.direct_http (issue 19).

    .venv/bin/python benchmarks/direct_http_post.py [--requests 3000]

A local listener answers every POST with a canned 800-byte answer shaped like the WinRM
service's (HTTP.sys headers); the client thread's CPU time (`time.thread_time`, system calls
included) is divided by the requests sent over one kept-alive connection. Two ways in: `post`
(what remoting.lean_http calls: a ready header block and the body) and `send` (the requests
adapter interface: a PreparedRequest copied per message, as lean_http did before issue 19).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANSWER = (b"HTTP/1.1 200 OK\r\nServer: Microsoft-HTTPAPI/2.0\r\nDate: Fri, 27 Nov 2026 23:36:29 GMT\r\n"
          b"Content-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: 800\r\n\r\n" + b"x" * 800)
HEADERS = {"User-Agent": "Python WinRM client", "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
           "Connection": "Keep-Alive", "Content-Type": "application/soap+xml;charset=UTF-8"}
BODY = b"y" * 1500  # a Create or Receive envelope


def _serve(listener: socket.socket) -> None:
    conn, _addr = listener.accept()
    data = b""
    with conn:
        while True:
            more = conn.recv(65536)
            if not more:
                return
            data += more
            while b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
                if len(rest) < length:
                    break
                data = rest[length:]
                conn.sendall(ANSWER)


def _timed(one: Callable[[], object], n: int) -> float:
    for _ in range(100):  # warm up (connection, caches)
        one()
    t0 = time.thread_time()
    for _ in range(n):
        one()
    return (time.thread_time() - t0) / n * 1e6


def _sender(way: str, url: str) -> tuple[Callable[[], object], Callable[[], None]]:
    """(one request, close) for `way` ("post" or "send") to `url`."""
    import requests

    from remoting.direct_http import DirectAdapter

    adapter = DirectAdapter()
    if way == "post":
        fields = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()).encode("latin-1") + b"Authorization: Basic dTpw\r\n"

        def one() -> object:
            return adapter.post(url, fields + b"Content-Length: %d\r\n" % len(BODY), BODY, timeout=(5, 5), verify=True)
    else:
        template = requests.PreparedRequest()
        template.prepare(method="POST", url=url, headers=HEADERS, data=b"", auth=("u", "p"))

        def one() -> object:
            request = template.copy()
            request.body = BODY
            request.headers["Content-Length"] = str(len(BODY))
            return adapter.send(request, timeout=(5, 5), verify=True)

    return one, adapter.close


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--ways", default="post,send", help="comma-separated: post, send")
    args = ap.parse_args()
    out: dict[str, float] = {}
    for way in args.ways.split(","):
        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/wsman"
        threading.Thread(target=_serve, args=(listener,), daemon=True).start()
        one, close = _sender(way, url)
        out[f"{way}_cpu_us_per_request"] = round(_timed(one, args.requests), 1)
        close()
        listener.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
