"""Splitting the agent's stdin into WS-Man Send chunks that fit the host's MaxEnvelopeSize.

A Send envelope carries its chunk as base64 (4 bytes per 3) inside about 1.2 KB of SOAP header
(`remoting.wsman_messages.send`); message encryption (NTLM/Kerberos/CredSSP over HTTP) adds a
MIME wrapper of a few hundred bytes. WinRM refuses an envelope above MaxEnvelopeSizekb
(w:EncodingLimit, 0x80338008): 150 KB on WinRM 1.1 (Server 2003), 500 KB on WinRM 2.0+ (MS docs
"Installation and configuration for Windows Remote Management"). pywinrm announces 153600 bytes,
so that is the default budget here.
"""

from __future__ import annotations

DEFAULT_MAX_ENVELOPE_SIZE = 153600  # bytes; pywinrm Protocol.DEFAULT_MAX_ENV_SIZE, = WinRM 1.1's 150 KB
ENVELOPE_OVERHEAD = 8192  # bytes reserved for the SOAP header/body and the encryption wrapper


def max_chunk_bytes(max_envelope_size: int = DEFAULT_MAX_ENVELOPE_SIZE, overhead: int = ENVELOPE_OVERHEAD) -> int:
    """The largest raw chunk (bytes) whose base64 plus `overhead` stays within `max_envelope_size`.

    Raises ValueError when the envelope cannot hold even a small chunk (< 1 KiB of data)."""
    room = max_envelope_size - overhead
    size = (room // 4) * 3
    if size < 1024:
        raise ValueError(f"MaxEnvelopeSize {max_envelope_size} bytes leaves no room for stdin chunks")
    return size


def split_stdin(
    data: bytes, max_envelope_size: int = DEFAULT_MAX_ENVELOPE_SIZE, overhead: int = ENVELOPE_OVERHEAD
) -> list[bytes]:
    """Split `data` into consecutive chunks for WS-Man Send, each fitting one envelope.

    The chunks concatenate back to `data`; there is always at least one chunk (possibly empty,
    so the final Send can carry `End="true"`)."""
    size = max_chunk_bytes(max_envelope_size, overhead)
    if not data:
        return [b""]
    return [data[i : i + size] for i in range(0, len(data), size)]


def split_base64(data_b64: bytes, max_envelope_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
                 overhead: int = ENVELOPE_OVERHEAD) -> list[bytes]:
    """The base64 text of each `split_stdin` chunk, given the base64 text of the whole stream
    (`remoting.agent_delivery.stdin_base64`): a chunk's size is a multiple of 3 bytes, so its
    base64 is exactly the matching slice of the stream's (4 characters per 3 bytes, padding only
    in the last chunk). There is always at least one (possibly empty) chunk."""
    size = max_chunk_bytes(max_envelope_size, overhead) // 3 * 4
    if not data_b64:
        return [b""]
    return [data_b64[i : i + size] for i in range(0, len(data_b64), size)]
