"""The socket's opening handshake (RFC 6455 §4.2): the checks, and the answers' bytes.

``api/http.py`` parses the upgrade request with the rest of HTTP (its line, every header
as sent, repeated ones each) and hands it over as an :class:`UpgradeRequest`;
:func:`check_upgrade` says whether to switch protocols or which plain HTTP error to
answer. Pure functions, table-tested in ``tests/test_handshake.py``.

Written out rather than left to ``websockets``, whose general handshake (headers object,
extensions, subprotocols) cost 150 µs a socket: a tenth of a reconnect storm.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from websockets.utils import accept_key

from campana.protocol import COUNTS_PARAMETER, SOCKET_PATH

# Headers a handshake may carry once only: a second Origin could pass the allow-list.
SINGLE_HEADERS = frozenset(
    {b"host", b"origin", b"upgrade", b"sec-websocket-key", b"sec-websocket-version"}
)


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """An upgrade request as the HTTP parser read it."""

    method: str
    target: bytes  # the request target as sent: path and query
    http_version: str  # "1.1"
    headers: Sequence[tuple[bytes, bytes]]  # names lowercased, in order, repeated ones each


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An upgrade request to accept: what the opening needs of it."""

    token: str | None
    origin: str | None
    accept: bytes  # Sec-WebSocket-Accept
    counts: bool = False  # asked for ``counts.updated`` (``&counts=1``)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    headers: str = ""  # extra header lines, each ending in CRLF


BAD_REQUEST = Refusal(400, "Bad Request")
NOT_FOUND = Refusal(404, "Not Found")
# The instance is full, or holds as many sockets not signed in as it allows.
FULL = Refusal(503, "Service Unavailable", "Retry-After: 1\r\n")


def check_upgrade(request: UpgradeRequest) -> Upgrade | Refusal:
    """Whether to switch protocols, and what the opening needs; or the error to answer."""
    headers: dict[bytes, bytes] = {}
    for name, value in request.headers:
        if name in SINGLE_HEADERS and name in headers:
            return BAD_REQUEST
        headers[name] = value.strip()
    if request.method != "GET" or request.http_version != "1.1" or not headers.get(b"host"):
        return BAD_REQUEST
    path, _, query = request.target.decode("latin-1").partition("?")
    if path != SOCKET_PATH:
        return NOT_FOUND
    if b"websocket" not in _tokens(headers.get(b"upgrade")) or b"upgrade" not in _tokens(
        headers.get(b"connection")
    ):
        return BAD_REQUEST
    if headers.get(b"sec-websocket-version") != b"13":
        return Refusal(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
    key = headers.get(b"sec-websocket-key", b"")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        return BAD_REQUEST
    origin = headers.get(b"origin")
    parameters = parse_qs(query)
    return Upgrade(
        token=parameters.get("token", [None])[0],
        origin=origin.decode("latin-1") if origin is not None else None,
        accept=accept_key(key.decode("ascii")).encode(),
        counts=parameters.get(COUNTS_PARAMETER, [""])[0].lower() in ("1", "true"),
    )


def switching_protocols(upgrade: Upgrade) -> bytes:
    """The 101 that opens the socket."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + upgrade.accept + b"\r\n\r\n"
    )


def refused(refusal: Refusal) -> bytes:
    """A plain-text HTTP error; the connection closes after it."""
    body = f"{refusal.status} {refusal.reason}\n"
    return (
        f"HTTP/1.1 {refusal.status} {refusal.reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{refusal.headers}\r\n{body}"
    ).encode()


def _tokens(header: bytes | None) -> list[bytes]:
    """The comma-separated tokens of a header, lowercased (``Connection: keep-alive, Upgrade``)."""
    return [token.strip().lower() for token in (header or b"").split(b",")]
