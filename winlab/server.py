"""The lab's HTTP(S) server: one listening socket per emulated host, one acceptor thread for all.

Owns sockets, HTTP framing (the stdlib `http.server.BaseHTTPRequestHandler` parser, HTTP/1.1
keep-alive), TLS, authentication legs and the network/HTTP faults (`connect`, `auth`,
`latency_ms`, `http_500_every`, `http_500_burst`). One acceptor thread multiplexes every
listening socket with `selectors`; each accepted connection gets a handler thread.

Latency: TCP_NODELAY is set and every response (status line, headers and body) is written in one
send. DESIGN.md measured a ~37 ms Nagle/delayed-ACK stall per request otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import itertools
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from winlab import auth, soap
from winlab.hostapi import LabHost
from winlab.wsman import Reply, WsmanService

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
SERVER_HEADER = "Microsoft-HTTPAPI/2.0"
#: Idle keep-alive before the server closes a connection (s). Long: an NTLM session lives on its
#: connection, and re-authenticating mid-conversation breaks pywinrm's message sealing.
KEEPALIVE_S = 600.0
#: Hard cap on a request body we read at all (bytes); larger ones are refused and the connection closed.
HARD_BODY_CAP = 64 * 1024 * 1024


@dataclass
class HostListener:
    """The listening endpoint of one host and its per-host server state."""

    host: LabHost
    address: str
    port: int
    scheme: str
    sock: socket.socket
    service: WsmanService
    lab: LabServer
    soap_requests: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        """The WS-Man endpoint URL, e.g. `http://127.0.0.1:40123/wsman`."""
        return f"{self.scheme}://{self.address}:{self.port}/wsman"


def distinct_address(index: int) -> str:
    """The loopback address of host number `index` (0-based) when each host gets its own address:
    127.10.0.1, 127.10.0.2, … (last octet 1–250, so never a network or broadcast-looking address)."""
    block, z = divmod(index, 250)
    x, y = divmod(block, 256)
    return f"127.{10 + x}.{y}.{z + 1}"


class _Handler(BaseHTTPRequestHandler):
    """One connection. `server` is the `HostListener`; per-connection auth state lives here."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = KEEPALIVE_S
    server: Any  # a HostListener (BaseHTTPRequestHandler types it as socketserver.BaseServer)

    def setup(self) -> None:
        super().setup()
        # Over TLS the acceptor knows its certificate's channel binding data (issue 16).
        context = getattr(self.connection, "context", None)
        end_point = self.server.lab.tls_end_points.get(context) if context is not None else None
        self.conn_auth = auth.ConnectionAuth(end_point, getattr(self.server.host, "cbt_hardening_level", "Relaxed"))
        self.final_auth_header = ""  # a last SPNEGO token, sent with the answer that completes auth

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr log (1000 hosts would flood the terminal)."""

    # ---------------------------------------------------------------------------------- output

    def _write(self, status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = (),
               content_type: str | None = SOAP_CONTENT_TYPE) -> None:
        # Callers count the request in the host records *before* writing: a client that has its
        # answer must find it counted (tests and benchmarks read the records right after a call).
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Server: {SERVER_HEADER}",
                 f"Date: {email.utils.formatdate(usegmt=True)}"]
        if body and content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        if self.final_auth_header and status != 401:
            lines.append(f"WWW-Authenticate: {self.final_auth_header}")
            self.final_auth_header = ""

        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        # One send: headers and body together (see the module docstring).
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib parser's error path (bad request line, bad headers, unknown method): an
        HTTP/1.1 status with an empty body and `Connection: close`, as HTTP.sys answers, in one send
        (the stdlib would answer an HTTP/0.9-looking request line with a bare HTML page)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._write(code, b"", content_type=None)

    def _unauthorized(self, bytes_in: int, extra: Sequence[tuple[str, str]] = ()) -> None:
        headers = list(extra) or [("WWW-Authenticate", v) for v in auth.WWW_AUTHENTICATE]
        self.server.host.records.count_request("Auth", bytes_in, 0)
        self._write(401, b"", headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --------------------------------------------------------------------------------- methods

    def do_GET(self) -> None:
        """WinRM answers only POST on /wsman."""
        self._other(405)

    do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _other(self, status: int) -> None:
        length = (self.headers.get("Content-Length") or "0").strip()
        if length.isdigit() and int(length) <= 1024 * 1024:
            self.rfile.read(int(length))  # keep the connection usable: consume the unused body
        else:
            self.close_connection = True
        self.server.host.records.count_request("Other", 0, 0)
        self._write(status)

    def do_POST(self) -> None:
        """Authenticate, unseal, run the WS-Man action, seal, answer — or inject a fault."""
        listener: HostListener = self.server
        host = listener.host
        if self.path.split("?", 1)[0].lower() != "/wsman":
            self._other(404)
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._other(411)
            return
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.isdigit() or int(length_text) > HARD_BODY_CAP:
            self.close_connection = True
            body = soap.fault_envelope(soap.fault_envelope_too_big(host.max_envelope_kb * 1024), None, host.name)
            host.records.count_request("Other", 0, len(body))
            self._write(400 if not length_text.isdigit() else 500, body)
            return
        raw = self.rfile.read(int(length_text))
        if len(raw) != int(length_text):
            self.close_connection = True
            return

        user = self._authenticate(raw)
        if user is None:
            return

        content_type = (self.headers.get("Content-Type") or "").lower()
        sealed = content_type.startswith("multipart/encrypted")
        if sealed:
            try:
                body = self.conn_auth.unwrap(raw)
            except auth.AuthError:
                self.close_connection = True
                host.records.count_request("Other", len(raw), 0)
                self._write(400)
                return
        else:
            body = raw
        if not body:
            # An authenticated empty POST: pywinrm's way to set up the NTLM context before sealing.
            host.records.count_request("Auth", len(raw), 0)
            self._write(200)
            return

        try:
            reply = self._injected_500(listener, body) or listener.service.handle(body, user)
        except Exception as exc:  # a lab bug must answer like a failing service, not kill the connection
            fault = soap.fault_internal(f"winlab internal error: {type(exc).__name__} ")
            reply = Reply(500, soap.fault_envelope(fault, None, host.name), "Other")
        if reply.drop:
            self._drop()
            host.records.count_request(reply.action, len(raw), 0)
            return
        if host.faults.latency_ms > 0:
            host.records.fault("latency")
            listener.lab.stop_event.wait(host.faults.latency_ms / 1000.0)
        out = reply.body
        ctype = SOAP_CONTENT_TYPE
        if sealed:
            out = self.conn_auth.wrap(out)
            ctype = auth.ENCRYPTED_CONTENT_TYPE
        host.records.count_request(reply.action, len(raw), len(out))
        self._write(reply.status, out, content_type=ctype)

    def _injected_500(self, listener: HostListener, body: bytes) -> Reply | None:
        faults = listener.host.faults
        number = next(listener.soap_requests)
        every = faults.http_500_every
        if number <= faults.http_500_burst or (every > 0 and number % every == 0):
            listener.host.records.fault("http_500")
            answer = soap.fault_envelope(soap.fault_internal(), None, listener.host.name)
            return Reply(500, answer, soap.sniff_action(body))
        return None

    def _authenticate(self, raw: bytes) -> str | None:
        """The authenticated user, or None after answering 401 (Basic, Negotiate/NTLM legs)."""
        host = self.server.host
        reject = host.faults.auth == "reject"
        header = (self.headers.get("Authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        scheme_l = scheme.lower()
        if scheme_l == "basic":
            creds = auth.parse_basic(header)
            found = auth.match_account(host.accounts, creds[0]) if creds else None
            if creds is None or found is None or found[1] != creds[1] or reject:
                if reject:
                    host.records.fault("auth_reject")
                self._unauthorized(len(raw))
                return None
            return found[0]
        if scheme_l in ("negotiate", "ntlm"):
            try:
                step = self.conn_auth.ntlm_step(scheme, token)
            except auth.AuthError:
                self._unauthorized(len(raw))
                return None
            if step.user is None:
                value = scheme + (" " + base64.b64encode(step.token).decode() if step.token else "")
                self._unauthorized(len(raw), [("WWW-Authenticate", value)])
                return None
            found = auth.match_account(host.accounts, step.user)
            # NTLM: re-check the host's own password (the NTLM user file is process-wide). Kerberos:
            # the KDC already checked it (the lab realm's principal has the account's password).
            ok = found is not None and (self.conn_auth.kerberos
                                        or self.server.lab.ntlm_password(step.user) == found[1])
            if not ok or reject:
                if reject:
                    host.records.fault("auth_reject")
                self.conn_auth.reset()
                self._unauthorized(len(raw))
                return None
            if step.token:
                self.final_auth_header = f"{scheme} {base64.b64encode(step.token).decode()}"
            return found[0] if found else None
        if self.conn_auth.user is not None:
            found = auth.match_account(host.accounts, self.conn_auth.user)
            if found is not None:
                return found[0]
        self._unauthorized(len(raw))
        return None


class LabServer:
    """Serves a list of `LabHost`s, each on its own listening socket.

    bind: the address for all hosts (default 127.0.0.1) unless `distinct_addresses`, which gives
    host i the address `distinct_address(i)`; port: 0 for ephemeral ports; ssl_context: serve
    HTTPS with it. `ntlm_passwords`: (DOMAIN, USER) upper-case → the password pyspnego's NTLM
    credential file holds for that name (see `winlab.auth`). Start with `start()`, stop with `stop()`.
    """

    def __init__(self, hosts: Sequence[LabHost], *, bind: str = "127.0.0.1", distinct_addresses: bool = False,
                 port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 ntlm_passwords: dict[tuple[str, str], str] | None = None) -> None:
        names = [h.name for h in hosts]
        if len({n.upper() for n in names}) != len(names):
            raise ValueError("host names must be unique (case-insensitive)")
        self.hosts = list(hosts)
        self.bind = bind
        self.distinct_addresses = distinct_addresses
        self.port = port
        self.ssl_context = ssl_context
        #: Served instead of `ssl_context` to hosts with fault `certificate: expired` (set by winlab.lab).
        self.expired_ssl_context: ssl.SSLContext | None = None
        #: Each TLS context's RFC 5929 channel binding data, `tls-server-end-point:<hash>` (set by winlab.lab).
        self.tls_end_points: dict[ssl.SSLContext, bytes] = {}
        self.stop_event = threading.Event()
        self.listeners: dict[str, HostListener] = {}
        self._ntlm_passwords = ntlm_passwords or {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread | None] = {}
        self._conn_host: dict[socket.socket, str] = {}
        self._power_events: list[tuple[HostListener, bool]] = []
        self._started = False

    def ntlm_password(self, principal: str) -> str | None:
        """The password the NTLM credential file holds for `DOMAIN\\user` (None if none)."""
        domain, user = auth.split_user(principal)
        return self._ntlm_passwords.get((domain.upper(), user.upper()))

    def addresses_for(self) -> list[str]:
        """The address each host will bind to, in host order."""
        if self.distinct_addresses:
            return [distinct_address(i) for i in range(len(self.hosts))]
        return [self.bind] * len(self.hosts)

    def start(self) -> None:
        """Bind every listener (connect=refused hosts: bound but not listening, so connections are
        refused) and start the acceptor thread. Raises OSError when an address cannot be bound."""
        scheme = "https" if self.ssl_context else "http"
        try:
            for host, address in zip(self.hosts, self.addresses_for(), strict=True):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, self.port))
                port = sock.getsockname()[1]
                url = f"{scheme}://{address}:{port}/wsman"
                listener = HostListener(host, address, port, scheme, sock, WsmanService(host, url, self.stop_event),
                                        self)
                self.listeners[host.name] = listener
                if host.faults.connect == "refused":
                    continue  # bound, never listening: the kernel answers RST (connection refused)
                power = getattr(host, "power", None)  # reboot (issue 21): optional, see winlab.power
                if power is not None:
                    power.subscribe(lambda up, lst=listener: self._power_changed(lst, up))
                sock.listen(128)
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, listener)
        except BaseException:
            self._close_listeners()
            raise
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._acceptor = threading.Thread(target=self._accept_loop, name="winlab-acceptor", daemon=True)
        self._acceptor.start()
        self._started = True

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            for key, _ in self._selector.select():
                listener: HostListener | None = key.data
                if listener is None:
                    self._drain_wake()
                    self._apply_power_events()
                    continue  # the wake-up socket: the loop condition decides
                try:
                    conn, peer = listener.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:
                    # EMFILE/ENFILE and the like: the socket stays readable, so back off instead of spinning.
                    self.stop_event.wait(0.05)
                    continue
                conn.setblocking(True)
                if listener.host.faults.connect == "hang":
                    listener.host.records.fault("connect_hang")
                    with self._lock:
                        self._conns[conn] = None  # held open, never read, closed at stop
                    continue
                thread = threading.Thread(target=self._serve, args=(conn, peer, listener),
                                          name=f"winlab-conn-{listener.host.name}", daemon=True)
                with self._lock:
                    if self.stop_event.is_set():
                        conn.close()
                        return
                    self._conns[conn] = thread
                thread.start()

    # --- reboots (issue 21): a restarting host refuses connections until it is back -----------

    def _power_changed(self, listener: HostListener, up: bool) -> None:
        """Called from the host's power timer: hand the transition to the acceptor thread."""
        with self._lock:
            self._power_events.append((listener, up))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"p")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _apply_power_events(self) -> None:
        """Down: stop listening (new connections are refused, as when WinRM stops with the OS) and
        drop the host's open connections. Up: listen again on the same address and port."""
        with self._lock:
            events, self._power_events = self._power_events, []
        for listener, up in events:
            if self.stop_event.is_set():
                return
            if not up:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(listener.sock)
                listener.sock.close()
                with self._lock:
                    conns = [s for s, h in self._conn_host.items() if h == listener.host.name]
                for s in conns:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                listener.host.records.fault("reboot_down")
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((listener.address, listener.port))
            except OSError:
                sock.close()
                listener.host.records.fault("reboot_rebind_failed")
                continue
            sock.listen(128)
            sock.setblocking(False)
            listener.sock = sock
            self._selector.register(sock, selectors.EVENT_READ, listener)
            listener.host.records.fault("reboot_up")

    def _serve(self, conn: socket.socket, peer: Any, listener: HostListener) -> None:
        sock: socket.socket = conn
        with self._lock:
            self._conn_host[conn] = listener.host.name
        try:
            if self.ssl_context is not None:
                conn.settimeout(30)
                context = self.ssl_context
                if self.expired_ssl_context is not None and getattr(listener.host.faults, "certificate", "ok") == "expired":
                    listener.host.records.fault("certificate_expired")
                    context = self.expired_ssl_context
                sock = context.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._conns[sock] = self._conns.pop(conn, None)
            _Handler(sock, peer, listener)  # type: ignore[arg-type]  # HostListener stands in for BaseServer
        except (OSError, ValueError):
            pass  # a client that vanished or spoke garbage (ssl.SSLError is an OSError); nothing to answer
        except Exception:  # a lab bug on one connection must not take the lab down: drop the connection
            listener.host.records.fault("server_error")
        finally:
            with self._lock:
                self._conns.pop(sock, None)
                self._conns.pop(conn, None)
                self._conn_host.pop(conn, None)
            with contextlib.suppress(OSError):
                sock.close()

    def _close_listeners(self) -> None:
        for listener in self.listeners.values():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(listener.sock)
            listener.sock.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, close every connection, cancel processes, join all threads (bounded by
        `timeout_s` overall). Safe to call twice."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for host in self.hosts:
            power = getattr(host, "power", None)
            if power is not None:
                power.cancel()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        self._close_listeners()
        with self._lock:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            if _thread is None:
                with contextlib.suppress(OSError):
                    sock.close()
        for listener in self.listeners.values():
            listener.service.shells.stop(join_timeout_s=max(0.0, min(1.0, deadline - time.monotonic())))
        for _sock, thread in conns:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def open_connections(self) -> int:
        """Connections currently being served (for tests and the summary)."""
        with self._lock:
            return len(self._conns)
