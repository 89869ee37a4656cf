"""What one client can make a process hold, signed in or not: each limit, tried as an
attacker would, with raw TCP connections to a separate ``campana serve`` process.

The server here has short deadlines so that each test sees them pass: a close completes
within 2 s, a request's head within 1 s, its body within 1 s, an idle keep-alive
connection is closed after 1 s.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from .support.frames import CONTINUATION, PING, TEXT, Frame, client_frame, close_code, split_frames
from .support.handshakes import BadUpgrade, as_params, bad_upgrades, upgrade_head
from .support.servers import HOUR_KEEPALIVE_SECONDS, Server, ServerPool

CLOSE_TIMEOUT = 2.0
HEADER_TIMEOUT = 1.0
SHORT_DEADLINES: dict[str, Any] = {
    "ws_close_timeout_seconds": CLOSE_TIMEOUT,
    "http_header_timeout_seconds": HEADER_TIMEOUT,
    "http_body_timeout_seconds": 1.0,
    "http_idle_timeout_seconds": 1.0,
}
TCP_ESTABLISHED = 1


@pytest.fixture
async def limited(server_pool: ServerPool) -> Server:
    return await server_pool.get("sqlite", "process", name="limits", **SHORT_DEADLINES)


def keepalives(raw: Raw) -> int:
    return sum(b'"keepalive"' in frame.payload for frame in raw.frames())


def upgrade(query: str = "") -> bytes:
    return upgrade_head(query=query).encode()


class Raw:
    """A TCP connection driven by hand: it reads only when told to."""

    def __init__(self, server: Server, *, receive_buffer: int | None = None) -> None:
        self.address = server.base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.setblocking(False)
        self.received = b""

    async def connect(self) -> Raw:
        host, port = self.address
        await asyncio.get_running_loop().sock_connect(self.sock, (host, int(port)))
        return self

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def try_send(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, ConnectionError):
            return 0

    async def read_until(self, done: object, timeout: float = 10.0) -> bytes:
        """Read until ``done(received)`` is true or the server closes."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not done(self.received):  # type: ignore[operator]
                try:
                    chunk = await loop.sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                self.received += chunk
        return self.received

    async def open_socket(self, token: str | None = None) -> list[Frame]:
        """Handshake, then read up to the first count (or a close): the opening frames."""
        await self.send(upgrade(f"?token={token}" if token else ""))
        await self.read_until(lambda data: b"\r\n\r\n" in data)
        head, _, _ = self.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head

        def opened(data: bytes) -> bool:
            frames, _ = split_frames(data.partition(b"\r\n\r\n")[2])
            return close_code(frames) is not None or any(
                b"unread_count" in frame.payload for frame in frames
            )

        await self.read_until(opened)
        return self.frames()

    def frames(self) -> list[Frame]:
        """The whole frames received after the handshake's answer."""
        frames, _ = split_frames(self.received.partition(b"\r\n\r\n")[2])
        return frames

    def is_open(self) -> bool:
        """The kernel's view: still ESTABLISHED, or closed or reset by the server."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return info[0] == TCP_ESTABLISHED

    def close(self) -> None:
        self.sock.close()


Dial = Callable[..., Awaitable[Raw]]


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    """``await dial(server, receive_buffer=...)``: a connected ``Raw``, closed after the test."""
    opened: list[Raw] = []

    async def connect(server: Server, *, receive_buffer: int | None = None) -> Raw:
        raw = Raw(server, receive_buffer=receive_buffer)
        opened.append(raw)
        return await raw.connect()

    yield connect
    for raw in opened:
        raw.close()


async def gone_within(connections: list[Raw], seconds: float) -> float:
    """Seconds until every connection was closed by the server; fails past ``seconds``."""
    started = time.monotonic()
    while any(c.is_open() for c in connections):
        assert time.monotonic() - started < seconds, "the server kept a connection open"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def rss(server: Server) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


async def cuts(server: Server, limit: str) -> float:
    """``campana_connections_cut_total{limit=...}`` as /metrics shows it now."""
    text = (await server.http.get("/metrics")).text
    prefix = f'campana_connections_cut_total{{limit="{limit}"}} '
    return sum(
        float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)
    )


async def hub_sockets(server: Server) -> int:
    """``campana_open_sockets``: the process's signed-in sockets, as /metrics shows it now."""
    text = (await server.http.get("/metrics")).text
    prefix = "campana_open_sockets "
    return sum(
        int(float(line.removeprefix(prefix)))
        for line in text.splitlines()
        if line.startswith(prefix)
    )


# 1. Ping floods, stuck sockets, and closing sockets against the caps


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed-in", "no-token"])
async def test_a_ping_flood_from_a_client_that_never_reads_is_dropped_and_holds_no_memory(
    limited: Server, dial: Dial, user: str, signed_in: bool
) -> None:
    """Ten sockets with a 4 KiB receive buffer send 4 MB of pings each and never read:
    the server stops reading them, closes them within its close deadline and its memory
    grows by a few MB at most (it grew by 59 MB, held for good, when every ping was
    answered into the transport's buffer)."""
    ping = client_frame(PING, b"x" * 125)
    before = rss(limited)
    cut_before = await cuts(limited, "frame_rate"), await cuts(limited, "close_timeout")
    raws = [await dial(limited, receive_buffer=4096) for _ in range(10)]
    for raw in raws:
        frames = await raw.open_socket(limited.token(user) if signed_in else None)
        assert close_code(frames) == (None if signed_in else 4401)
    started = time.monotonic()
    sent = dict.fromkeys(raws, 0)
    peak = before
    while time.monotonic() - started < 3 and min(sent.values()) < 4_000_000:
        for raw in raws:
            sent[raw] += raw.try_send(ping * 64)
        peak = max(peak, rss(limited))
        await asyncio.sleep(0.001)
    await gone_within(raws, CLOSE_TIMEOUT + 2)
    peak = max(peak, rss(limited))
    assert (peak - before) < 12 * 1024, f"RSS grew by {(peak - before) // 1024} MB"
    assert await hub_sockets(limited) == 0
    cut_after = await cuts(limited, "frame_rate"), await cuts(limited, "close_timeout")
    assert (cut_after[0] - cut_before[0], cut_after[1] - cut_before[1]) == (10, 10)


async def test_a_closing_socket_counts_against_its_users_cap_until_it_is_gone(
    server_pool: ServerPool, dial: Dial, user: str
) -> None:
    """With a cap of 2, a new tab closes the oldest with 4429; tabs that never answer
    that close still count, so a user never holds more than 2 open and 2 closing, and
    the closing ones are gone by the close deadline."""
    server = await server_pool.get(
        "sqlite", "process", name="cap", max_sockets_per_user=2, **SHORT_DEADLINES
    )
    tabs = []
    for _ in range(4):
        tab = await dial(server)
        assert close_code(await tab.open_socket(server.token(user))) is None
        tabs.append(tab)
    # The two oldest were told 4429 and never answered: they are closing, not gone.
    for oldest in tabs[:2]:
        await oldest.read_until(lambda _data, tab=oldest: close_code(tab.frames()) is not None)
        assert close_code(oldest.frames()) == 4429
    assert await hub_sockets(server) == 4
    refused = await dial(server)
    frames = await refused.open_socket(server.token(user))
    assert close_code(frames) == 4429
    assert not any(b"snapshot" in frame.payload for frame in frames)
    assert await hub_sockets(server) == 4
    await gone_within([tabs[0], tabs[1], refused], CLOSE_TIMEOUT + 2)
    assert await hub_sockets(server) == 2
    # Room again: a new tab is let in, and the oldest open one makes room for it.
    late = await dial(server)
    assert close_code(await late.open_socket(server.token(user))) is None
    await tabs[2].read_until(lambda _data: close_code(tabs[2].frames()) is not None)
    assert close_code(tabs[2].frames()) == 4429


async def test_a_socket_whose_keepalive_ping_goes_unanswered_is_dropped_by_the_deadline(
    server_pool: ServerPool, dial: Dial, user: str
) -> None:
    """The protocol ping times out, the server fails the socket: its transport is gone
    within the close deadline even though the peer never reads a byte."""
    server = await server_pool.get(
        "sqlite",
        "process",
        name="pings",
        ws_ping_interval_seconds=0.5,
        ws_ping_timeout_seconds=0.5,
        **SHORT_DEADLINES,
    )
    tab = await dial(server, receive_buffer=4096)
    assert close_code(await tab.open_socket(server.token(user))) is None
    # Fill the tab's buffers so that nothing more, the close frame included, gets through.
    for _ in range(80):
        await server.send(user, "x" * 2000)
    waited = await gone_within([tab], 0.5 + 0.5 + CLOSE_TIMEOUT + 2)
    assert waited > 0.5
    assert await hub_sockets(server) == 0


# 2. Heads: deadline, size, keep-alive


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    limited: Server, dial: Dial
) -> None:
    idle = await dial(limited)
    cut_before = await cuts(limited, "header_timeout")
    waited = await gone_within([idle], HEADER_TIMEOUT + 2)
    assert await cuts(limited, "header_timeout") == cut_before + 1
    assert waited >= HEADER_TIMEOUT * 0.9
    assert await idle.read_until(lambda _data: False) == b""


@pytest.mark.parametrize(
    "partial",
    [b"GET /healthz HT", b"GET /healthz HTTP/1.1\r\nHost: campana\r\nX-Slow: 1", upgrade()[:40]],
    ids=["request-line", "headers", "upgrade"],
)
async def test_a_partial_request_gets_408_at_the_header_deadline(
    limited: Server, dial: Dial, partial: bytes
) -> None:
    raw = await dial(limited)
    await raw.send(partial)
    started = time.monotonic()
    answer = await raw.read_until(lambda _data: False, timeout=HEADER_TIMEOUT + 3)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < HEADER_TIMEOUT + 1


async def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline_from_the_connection(
    limited: Server, dial: Dial
) -> None:
    """The deadline counts from the connection, not from the last byte."""
    raw = await dial(limited)
    started = time.monotonic()
    for byte in b"GET /healthz HTTP/1.1\r\nHost: campana\r\nX-Drip: " + b"a" * 100:
        if not raw.is_open() or raw.try_send(bytes([byte])) == 0:
            break
        await asyncio.sleep(0.05)
    answer = await raw.read_until(lambda _data: False)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < HEADER_TIMEOUT + 1


async def test_an_idle_keep_alive_connection_is_closed(limited: Server, dial: Dial) -> None:
    raw = await dial(limited)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: campana\r\n\r\n")
    await raw.read_until(lambda data: data.endswith(b'{"status":"ok"}'))
    assert raw.received.startswith(b"HTTP/1.1 200 ")
    await gone_within([raw], 1.0 + 2)


@pytest.mark.parametrize("size", [20_000, 200_000, 8_000_000])
@pytest.mark.parametrize("target", ["healthz", "socket"])
async def test_an_oversized_head_gets_431(
    rest_server: Server, dial: Dial, size: int, target: str
) -> None:
    """Over the 16 KiB default, on a plain request and on the socket's upgrade; the
    server answers while the head is still arriving, without reading all of it."""
    raw = await dial(rest_server)
    if target == "socket":
        head = upgrade_head(extra=("X-Big: " + "a" * size,)).encode()
    else:
        head = b"GET /healthz HTTP/1.1\r\nHost: campana\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    started = time.monotonic()
    sending = asyncio.ensure_future(raw.send(head))
    answer = await raw.read_until(lambda data: b"\r\n\r\n" in data)
    sending.cancel()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert time.monotonic() - started < 2


async def test_a_body_that_does_not_arrive_gets_408(limited: Server, dial: Dial) -> None:
    raw = await dial(limited)
    token = limited.producer["Authorization"]
    await raw.send(
        b"POST /api/v1/notifications/ HTTP/1.1\r\nHost: campana\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n"
        b"Authorization: " + token.encode() + b"\r\n\r\n" + b'{"user_id": "'
    )
    started = time.monotonic()
    answer = await raw.read_until(lambda _data: False, timeout=5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 1.0 + 1


# 5. Handshake


# What a lenient parser lets through (one name in the head read twice, or a head that is
# not quite HTTP/1.1): a strict server refuses each with 400.
LENIENT = ("http-1.0", "http-2.0", "no-host", "two-keys", "two-origins", "no-colon", "no-version")


@pytest.mark.parametrize("case", as_params(bad_upgrades(*LENIENT)))
async def test_a_lenient_upgrade_is_refused_with_400(
    rest_server: Server, dial: Dial, case: BadUpgrade
) -> None:
    raw = await dial(rest_server)
    await raw.send(case.head.encode())
    answer = await raw.read_until(lambda data: b"\r\n\r\n" in data)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


@pytest.mark.parametrize("split", [None, 3], ids=["whole", "split-frame"])
async def test_frames_sent_in_the_handshakes_packet_are_read(
    rest_server: Server, server_pool: ServerPool, dial: Dial, user: str, split: int | None
) -> None:
    """A ``ping`` sent right behind the upgrade, whole or cut in two, is answered after the
    opening. On a server with an hour's keepalive period, so that the keepalive read can
    only be that answer."""
    server = await server_pool.get(
        rest_server.database, rest_server.mode, keepalive_seconds=HOUR_KEEPALIVE_SECONDS
    )
    raw = await dial(server)
    ping = client_frame(TEXT, b"ping")
    packet = upgrade(f"?token={server.token(user)}") + ping[:split]
    await raw.send(packet)
    if split is not None:
        await asyncio.sleep(0.2)  # timed on purpose: the rest comes in a packet of its own
        await raw.send(ping[split:])
    await raw.read_until(lambda _data: keepalives(raw) >= 1)
    events = [frame.json()["event"] for frame in raw.frames()]
    assert events == ["snapshot", "unread_count.updated", "keepalive"]


# 6. Protocol


@pytest.mark.parametrize(
    "frames",
    [
        [client_frame(TEXT, b"pi\xffng")],
        [client_frame(TEXT, b"caf\xc3", fin=False), client_frame(CONTINUATION, b"\x28")],
    ],
    ids=["one-frame", "fragmented"],
)
async def test_a_text_frame_that_is_not_utf8_is_closed_with_1007(
    rest_server: Server, dial: Dial, user: str, frames: list[bytes]
) -> None:
    raw = await dial(rest_server)
    assert close_code(await raw.open_socket(rest_server.token(user))) is None
    await raw.send(b"".join(frames))
    await raw.read_until(lambda _data: close_code(raw.frames()) is not None)
    assert close_code(raw.frames()) == 1007


async def test_a_fragmented_utf8_text_is_accepted_and_ignored(
    rest_server: Server, server_pool: ServerPool, dial: Dial, user: str
) -> None:
    """On a server with an hour's keepalive period: each keepalive read answers a ping."""
    server = await server_pool.get(
        rest_server.database, rest_server.mode, keepalive_seconds=HOUR_KEEPALIVE_SECONDS
    )
    raw = await dial(server)
    assert close_code(await raw.open_socket(server.token(user))) is None
    await raw.send(
        client_frame(TEXT, b"caf\xc3", fin=False)
        + client_frame(CONTINUATION, b"\xa9")
        + client_frame(TEXT, b"ping") * 2
    )
    await raw.read_until(lambda _data: keepalives(raw) >= 2)  # both pings answered
    assert close_code(raw.frames()) is None


# 7. Shutdown


async def test_a_stop_ends_within_its_grace_even_with_sockets_that_never_read(
    server_pool: ServerPool, dial: Dial, user: str
) -> None:
    """Five tabs stop reading with megabytes on their way; SIGTERM with a 4 s grace
    ends the process within it (it took the server's grace, then the hub's again)."""
    server = await server_pool.start("sqlite", "process", shutdown_grace_seconds=4.0)
    for _ in range(5):
        raw = await dial(server, receive_buffer=4096)
        assert close_code(await raw.open_socket(server.token(user))) is None
    for _ in range(80):
        await server.send(user, "x" * 2000)
    await asyncio.sleep(0.5)
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(server.process.wait, 30)
    assert time.monotonic() - started < 4.0 + 0.5
