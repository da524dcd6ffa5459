"""How a plain TCP socket waits, and whether its peer has closed it, with as few system calls that
let go of the GIL as Linux allows (issue 19: a fleet's ~100 threads wait for the GIL after each
one, a context switch and cold caches).

- `KERNEL_TIMEOUTS` / `set_kernel_timeout`: on Linux a blocking socket's sends and receives are
  bounded by the kernel (SO_SNDTIMEO/SO_RCVTIMEO, socket(7)): one system call each, where a socket
  with a Python timeout polls before every one. A call that times out fails with EAGAIN
  (`BlockingIOError`). Not for TLS sockets: the ssl module retries a kernel-timed-out read of a
  blocking socket for ever.
- `peer_closed`: whether an idle kept-alive connection was closed by the other end, read from the
  connection's TCP state on Linux (TCP_INFO, tcp(7); `getsockopt` keeps the GIL), else by a
  select as urllib3 checks before reusing a connection.
"""

from __future__ import annotations

import select
import socket
import struct
import sys

_LINUX = sys.platform.startswith("linux")

#: Whether `set_kernel_timeout` may be used (Linux, where SO_RCVTIMEO/SO_SNDTIMEO take a timeval).
KERNEL_TIMEOUTS = _LINUX and hasattr(socket, "SO_RCVTIMEO")

TIMEVAL = struct.Struct("@ll")
"""struct timeval on Linux: time_t and suseconds_t are both long."""

#: The first byte of struct tcp_info is tcpi_state; 1 is TCP_ESTABLISHED (include/net/tcp_states.h).
#: A FIN or RST from the peer moves it on (CLOSE_WAIT, CLOSE).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if _LINUX else None
_TCP_ESTABLISHED = 1


def set_kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound each later send and receive of the blocking `sock` to `seconds` (> 0) in the kernel.
    A timeval of all zeros would mean "wait for ever" (socket(7)): a positive wait under a
    microsecond becomes one microsecond. Raises OSError."""
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    tv = TIMEVAL.pack(whole, micro if whole or micro else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def peer_closed(sock: socket.socket) -> bool:
    """True when an idle kept-alive connection was closed by the other end: on Linux, its TCP
    state is no longer ESTABLISHED (a FIN or a reset came); elsewhere, it is readable (EOF or
    bytes nobody asked for). A socket that cannot be asked counts as closed."""
    if _TCP_INFO is not None:
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 8)[0] != _TCP_ESTABLISHED
        except OSError:
            return True
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
