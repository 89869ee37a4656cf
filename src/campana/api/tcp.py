"""TCP options both protocols set on a connection's socket (``api/http.py``, ``api/ws.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a TCP reset
# Linux: the kernel drops a connection whose sent data goes unacknowledged this long,
# zero-window probes included (so a peer that never reads), even after close.
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def reset(transport: asyncio.BaseTransport) -> None:
    """Drop the connection with a TCP reset: what the process and the kernel still hold for
    the peer is freed now, not after its retransmissions give up, and the peer learns at
    once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    transport.abort()  # type: ignore[attr-defined]


def set_user_timeout(transport: asyncio.BaseTransport, seconds: float) -> None:
    """``TCP_USER_TIMEOUT`` where the system has it; 0 gives the system's own back."""
    sock = transport.get_extra_info("socket")
    if TCP_USER_TIMEOUT is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(seconds * 1000))
