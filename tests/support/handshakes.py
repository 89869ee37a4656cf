"""The socket's opening handshake as the tests write it (RFC 6455 §4.2): the good upgrade
request, and the one table of bad ones with the status each must get.

``tests/test_handshake.py`` checks the table against ``check_upgrade`` alone; the tests
on real servers send the cases they are about over TCP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from campana.protocol import SOCKET_PATH

from .servers import ALLOWED_ORIGIN

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC's example key (§1.3) ...
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # ... and its Sec-WebSocket-Accept
GOOD_HEADERS: Mapping[str, str] = {
    "Host": "campana",
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
}


@dataclass(frozen=True)
class UpgradeHead:
    """An upgrade request's head as sent: its request line, then its header lines."""

    line: str
    header_lines: tuple[str, ...]

    def encode(self) -> bytes:
        return "\r\n".join((self.line, *self.header_lines, "", "")).encode()


def upgrade_head(
    changes: Mapping[str, str | None] | None = None,
    *,
    query: str = "",
    line: str | None = None,
    extra: tuple[str, ...] = (),
) -> UpgradeHead:
    """The good upgrade to the socket's path and ``query``, with ``changes`` to its
    headers (``None`` leaves one out), another request ``line``, or ``extra`` header lines
    after the others."""
    headers = {k: v for k, v in {**GOOD_HEADERS, **(changes or {})}.items() if v is not None}
    return UpgradeHead(
        line or f"GET {SOCKET_PATH}{query} HTTP/1.1",
        (*(f"{name}: {value}" for name, value in headers.items()), *extra),
    )


@dataclass(frozen=True)
class BadUpgrade:
    name: str
    head: UpgradeHead
    status: int
    # Refused by the HTTP parser (400) before the handshake sees the request, so only a
    # real server can be asked.
    unparsable: bool = False


BAD_UPGRADES = (
    BadUpgrade("post", upgrade_head(line=f"POST {SOCKET_PATH} HTTP/1.1"), 400),
    BadUpgrade("http-1.0", upgrade_head(line=f"GET {SOCKET_PATH} HTTP/1.0"), 400),
    BadUpgrade("http-2.0", upgrade_head(line=f"GET {SOCKET_PATH} HTTP/2.0"), 400),
    BadUpgrade("no-version", upgrade_head(line=f"GET {SOCKET_PATH}"), 400, unparsable=True),
    BadUpgrade(
        "other-path", upgrade_head(line="GET /api/v1/notifications/elsewhere HTTP/1.1"), 404
    ),
    BadUpgrade("no-host", upgrade_head({"Host": None}), 400),
    BadUpgrade("empty-host", upgrade_head({"Host": ""}), 400),
    BadUpgrade("two-hosts", upgrade_head(extra=("Host: other",)), 400),
    # The allowed one second: a server that kept the last would let the first through.
    BadUpgrade(
        "two-origins",
        upgrade_head({"Origin": "http://evil.example"}, extra=(f"Origin: {ALLOWED_ORIGIN}",)),
        400,
    ),
    BadUpgrade("two-keys", upgrade_head(extra=(f"Sec-WebSocket-Key: {KEY}",)), 400),
    BadUpgrade("no-colon", upgrade_head(extra=("no colon here",)), 400, unparsable=True),
    BadUpgrade("no-upgrade", upgrade_head({"Upgrade": None}), 400),
    BadUpgrade("other-upgrade", upgrade_head({"Upgrade": "h2c"}), 400),
    BadUpgrade("connection-without-upgrade", upgrade_head({"Connection": "keep-alive"}), 400),
    BadUpgrade("version-8", upgrade_head({"Sec-WebSocket-Version": "8"}), 426),
    BadUpgrade("no-version-header", upgrade_head({"Sec-WebSocket-Version": None}), 426),
    BadUpgrade("no-key", upgrade_head({"Sec-WebSocket-Key": None}), 400),
    BadUpgrade("short-key", upgrade_head({"Sec-WebSocket-Key": "c2hvcnQ="}), 400),
    BadUpgrade(
        "key-not-base64", upgrade_head({"Sec-WebSocket-Key": "not base64 at all!!!!!!="}), 400
    ),
)
_BY_NAME = {case.name: case for case in BAD_UPGRADES}


def bad_upgrades(*names: str) -> list[BadUpgrade]:
    """The cases of the table with these names, in that order."""
    return [_BY_NAME[name] for name in names]


def as_params(cases: Iterable[BadUpgrade]) -> list[Any]:
    """``pytest.param``s of the cases, each shown by its name."""
    return [pytest.param(case, id=case.name) for case in cases]
