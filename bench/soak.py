"""A short soak: what misbehaving connections cost the well-behaved ones, in one command.

One ``campana serve`` process (the embedded SQLite, or PostgreSQL with ``--postgres``),
the same producer load in every phase:

A. baseline: well-behaved sockets (a few per user, under the cap of 20) that read every
   frame, while a producer creates notifications at a fixed rate for their users, and a
   second stream of 1.5 KB notifications goes to the few users whose sockets will not
   read in phase B (in A those users have no socket);
B. the same, plus misbehaving connections, opened with raw sockets:

   * ping flood: authenticated, a 4 KiB receive buffer set before connecting, never
     read, masked 125-byte PINGs as fast as the kernel takes them. Expected of the
     server: the rate limit closes it (1008), then the close timeout aborts it;
   * never reads: authenticated, reads nothing after the upgrade while its user's
     notifications flow. Expected: send queue overflow, close 1013, abort after the
     close timeout;
   * half upgrade: the request line and half the headers, then silence. Expected: the
     header deadline closes it (408);
   * never reads its answer: a 4 KiB receive buffer, asks for a page of 100 long items
     (about 420 KB) and reads nothing. Expected: the write deadline drops it (a reset);
   * huge invalid body: a producer call of 1M empty recipients (3 MB). Expected: a 422
     of a few hundred bytes at once, then the idle close;
   * never signs in: an upgrade with a refused token, then never completes the close.
     Expected: the close deadline aborts it, or the next such socket takes its place;
   * pipelined, then gone: three page requests in one write, never read, and a reset from
     the client a second later. Expected: nothing in the server's log (it was a traceback
     each);
   * pipelined creates: 400 creates in one connection, written in 20 KB pieces. Expected:
     400 answers 201, in order, then the idle close;

   then a settle without load, until the server has dropped them all (``--settle``
   seconds at most; this script closes what is left). B runs ``--rounds`` times in a
   row (2 by default) on the same server, each round with fresh misbehaving connections.

Each phase reports, for the well-behaved sockets, the latency from the start of each
create call (the message carries the time) to the frame's arrival, and every delivery
expected (each created notification at each socket of its user) against those received.
Each round reports its p99 against A's (target at most 2, every round); which
misbehaving connections the server dropped by itself and how long after their
misbehaviour began ("dropped": the server process no longer holds the connection, read
from /proc/net/tcp four times a second, or the client got a reset or an end of stream;
target: all of them); and the server's RSS at the round's start, at its peak and after
its settle.

The RSS is not expected to come back down once the misbehaving connections are gone:
CPython's allocator carves small objects out of 1 MiB arenas and returns an arena to the
system only once every object in it is freed, and glibc's malloc, which serves the
larger blocks, gives back little more than the free space at the top of its heap. Freed
memory stays in the process for the next allocations, so the question is not whether
the RSS falls back but whether that memory is reused. Two checks answer it, each net of
the growth the load alone causes (phase A's RSS growth per second of load):

* reuse, the leak check: the RSS after the last round's settle against the RSS after
  the first's, net of the load's growth over the later rounds' load, within 2 MB. Later
  rounds that reuse the memory the first one took stay flat; a leak adds about the
  first round's cost every round;
* cost: the first round's growth, from its start to after its settle, net of the load's
  growth over its load, within 5 MB per 100 misbehaving connections.

The machine is shared and noisy: read the ratios, which compare phases of one run,
rather than the absolute figures. Usage::

    .venv/bin/python bench/soak.py            # 900 sockets, 60 s a phase, 2 rounds: 3.5 min
    .venv/bin/python bench/soak.py --quick    # 300 sockets, 20 s a phase: under 2 minutes
    .venv/bin/python bench/soak.py --postgres --json > soak.json   # the table on stderr
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import itertools
import json
import math
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import orjson
from common import HttpPool, Server, cpu_seconds, ensure_database, free_port, percentile, rss_bytes

from campana.auth import SEND_SCOPE, mint_token
from campana.settings import Settings

SOAK_POSTGRES_URL = os.environ.get(
    "CAMPANA_SOAK_POSTGRES_URL", "postgresql://postgres@127.0.0.1/campana_soak"
)
SOCKET_PATH = "/api/v1/notifications/ws"
CREATE_PATH = "/api/v1/notifications/"
MB = 1 << 20

PRODUCER_CONNECTIONS = 32
# A create not answered in this long is counted as failed (the phase must end).
ANSWER_PATIENCE = 60.0
# After the last create, how long deliveries may take before the missing ones are lost.
DRAIN_SECONDS = 15.0
# Once every misbehaving connection is gone, the same pause each round before the RSS
# reading: the server takes in the last drops (or the soak's closes) before it.
AFTER_SETTLE_SECONDS = 1.0
P99_TARGET = 2.0
RSS_COST_PER_100_MB = 5.0  # the first round's growth, per 100 misbehaving connections
RSS_REUSE_MB = 2.0  # the later rounds' growth, in all
WATCH_SECONDS = 0.25  # the RSS sample and /proc/net/tcp poll period
# A server that grows past this is not left to eat the shared machine: the misbehaving
# connections are closed at once, and the report says so.
RSS_CAP_MB = 1024

FLOOD_PER_USER = 5
SILENT_PER_USER = 7
STALL_MESSAGE = "x" * 1500  # fills a reader's buffers in seconds rather than minutes
# The tiny receive buffer of a flooding client: the server's pongs cannot drain to it.
FLOOD_RECEIVE_BUFFER = 4096
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a TCP reset

FLOOD, SILENT, HALF = "ping flood", "never reads", "half upgrade"
UNREAD, HUGE, NO_SIGN_IN = "never reads its answer", "huge invalid body", "never signs in"
GONE, PIPELINE = "pipelined, then gone", "pipelined creates"
READS = "reads its answer"  # a control: what UNREAD asks, read as a browser would
KINDS = (FLOOD, SILENT, HALF, UNREAD, HUGE, NO_SIGN_IN, GONE, PIPELINE, READS)
# ``--only`` names, and the plan's count of each.
PLAN_FIELDS = {
    "flood": "flooders",
    "silent": "silent",
    "half": "half_upgrades",
    "unread": "unread_answers",
    "huge": "huge_bodies",
    "nosignin": "never_sign_in",
    "gone": "pipelined_gone",
    "pipeline": "pipelined_creates",
    "reads": "read_answers",  # not played unless named: a control for "unread"
}
# Closed by the soak itself, by design: not counted as left open by the server.
CLOSED_BY_CLIENT = frozenset({GONE})
PAGE_ITEMS = 100  # of the long page the answer readers ask for, 2 KB message and link each
PIPELINED_CREATES = 400
NOT_A_JWT = "not-a-jwt"  # the server refuses it: close 4401
# Named by setting, not by value: the defaults may change.
EXPECTED = {
    FLOOD: "rate limit: close 1008, abort after CAMPANA_WS_CLOSE_TIMEOUT_SECONDS",
    SILENT: "send queue overflow: close 1013, abort after CAMPANA_WS_CLOSE_TIMEOUT_SECONDS",
    HALF: "408 at CAMPANA_HTTP_HEADER_TIMEOUT_SECONDS",
    UNREAD: "a TCP reset at CAMPANA_HTTP_WRITE_TIMEOUT_SECONDS",
    HUGE: "422 of a few hundred bytes, then the close at CAMPANA_HTTP_IDLE_TIMEOUT_SECONDS",
    NO_SIGN_IN: "close 4401, abort after CAMPANA_WS_CLOSE_TIMEOUT_SECONDS or when the next one "
    "needs its place (CAMPANA_MAX_UNAUTHENTICATED_SOCKETS)",
    GONE: "closed by the client after 1 s; no line in the server's log",
    PIPELINE: f"{PIPELINED_CREATES}x 201, then the close at CAMPANA_HTTP_IDLE_TIMEOUT_SECONDS",
    READS: "(a control, not a misbehaviour) the page, then the close at "
    "CAMPANA_HTTP_IDLE_TIMEOUT_SECONDS",
}

# Frames the server sends start so: orjson keeps the envelope's key order.
CREATED_PREFIX = b'{"event":"notification.created"'
SNAPSHOT_PREFIX = b'{"event":"snapshot"'
MARKER = b'"message":"soak '


@dataclass(frozen=True)
class Plan:
    sockets: int = 900  # well-behaved
    per_user: int = 3
    rate: float = 100.0  # creates per second for the well-behaved sockets' users
    seconds: float = 60.0  # of load, a phase
    flooders: int = 35
    silent: int = 35
    half_upgrades: int = 30
    unread_answers: int = 30
    huge_bodies: int = 4
    never_sign_in: int = 60
    pipelined_gone: int = 20
    pipelined_creates: int = 4
    read_answers: int = 0  # the control for unread_answers, played only when named
    stall_rate: float = 20.0  # 1.5 KB creates per second, each for every non-reader's user
    settle: float = 60.0  # after each round's load, time the server has to drop them
    rounds: int = 2  # of phase B, each with fresh misbehaving connections
    # Unmeasured load first: the server's RSS grows fastest in its first seconds of load
    # (caches, pools, first allocations), which would read as phase A's own growth.
    warmup: float = 10.0


QUICK = Plan(
    sockets=300,
    seconds=20.0,
    flooders=12,
    silent=12,
    half_upgrades=10,
    unread_answers=10,
    huge_bodies=2,
    never_sign_in=20,
    pipelined_gone=10,
    pipelined_creates=2,
    settle=30.0,
    warmup=5.0,
)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame (RFC 6455 §5.2): FIN|opcode, 0x80|length, key, masked payload."""
    assert len(payload) < 126, "control frames and this soak's frames are short"
    key = os.urandom(4)
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + masked


PING_FRAME = masked_frame(0x9, os.urandom(125))
# One send of many pings: the flood costs the generator a system call per 66 KB.
FLOOD_CHUNK = PING_FRAME * 500


def upgrade_request(port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {SOCKET_PATH}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@dataclass
class Receipts:
    """Every first arrival of a marked notification at a well-behaved socket."""

    arrivals: Counter[int] = field(default_factory=Counter)  # seq: sockets that have it
    latencies: list[tuple[int, float]] = field(default_factory=list)  # (seq, seconds)

    def arrived(self, seq: int, latency: float) -> None:
        self.arrivals[seq] += 1
        self.latencies.append((seq, latency))


class Tab(asyncio.Protocol):
    """A well-behaved socket: reads every frame, answers pings, notes each delivery.

    A protocol object rather than a task and a stream per socket, and it decodes only a
    frame's header and the message of a ``notification.created``: 900 of these share
    the generator's core with the producer.
    """

    def __init__(self, request: bytes, user: int, receipts: Receipts) -> None:
        self.user = user
        self.seen: set[int] = set()
        self.in_snapshot: set[int] = set()  # marked items a later snapshot carried
        self.snapshots = 0
        self.duplicates = 0
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request = request
        self._receipts = receipts
        self._buffer = bytearray()
        self._upgraded = False
        self._frames = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.perf_counter()
        if self.close_code is None:
            self.close_code = 1006
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed while opening ({self.close_code})"))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                status = bytes(buffer[: buffer.find(b"\r\n")]).decode(errors="replace")
                self.ready.set_exception(ConnectionError(f"upgrade refused: {status}"))
                self.abort()
                return
            del buffer[: end + 4]
            self._upgraded = True
        # Server frames: unmasked and never fragmented.
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            opcode, length = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if start + length > size:
                break
            self._on_frame(opcode, bytes(buffer[start : start + length]))
            offset = start + length
        del buffer[:offset]

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            self._on_text(payload)
        elif opcode == 0x9 and self._transport is not None:
            self._transport.write(masked_frame(0xA, payload))
        elif opcode == 0x8 and self._transport is not None:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._transport.write(masked_frame(0x8, payload[:2]))
            self._transport.close()

    def _on_text(self, payload: bytes) -> None:
        self._frames += 1
        if self._frames == 2 and not self.ready.done():  # snapshot, then unread count
            self.ready.set_result(None)
        if payload.startswith(CREATED_PREFIX):
            start = payload.find(MARKER)
            if start < 0:
                return  # the stream to the non-readers' users
            start += len(MARKER)
            seq_text, sent_text = payload[start : payload.index(b'"', start)].split(b" ")
            seq = int(seq_text)
            if seq in self.seen:
                self.duplicates += 1
                return
            self.seen.add(seq)
            self._receipts.arrived(seq, time.perf_counter() - float(sent_text))
        elif payload.startswith(SNAPSHOT_PREFIX):
            self.snapshots += 1
            for item in orjson.loads(payload)["payload"]:
                words = item["message"].split(" ")
                if words[0] == "soak":
                    self.in_snapshot.add(int(words[1]))


@dataclass(eq=False)
class Misbehaver:
    """One misbehaving connection, and when the server let it go."""

    kind: str
    sock: socket.socket
    port: int  # its local port: the server's side of it is found by it in /proc/net/tcp
    started: float = math.nan  # when its misbehaviour began
    held: bool = False  # seen held by the server process (accepted, not yet let go)
    dropped_at: float | None = None
    closed_by_soak: bool = False
    client_saw: str = ""  # what the client itself noticed of the drop
    sent: int = 0  # bytes the kernel took from it, after the upgrade

    @property
    def open(self) -> bool:
        return self.dropped_at is None and not self.closed_by_soak

    def saw(self, what: str) -> None:
        self.client_saw = self.client_saw or what
        if self.open:
            self.dropped_at = time.perf_counter()

    def close(self) -> None:
        if self.open:
            self.closed_by_soak = True
        self.sock.close()


def held_client_ports(server_port: int) -> set[int]:
    """Client ports of the connections the server process still holds open.

    A connection the process has closed, even one whose unsent data keeps it alive in
    the kernel (an orphan), or one still waiting in the accept queue, is listed with
    inode 0; one that is gone is not listed.
    """
    suffix = f":{server_port:04X}"
    held: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix) and fields[9] != "0":
            held.add(int(fields[2].rsplit(":", 1)[1], 16))
    return held


class Watch:
    """Samples the server's RSS, and notices when it lets a misbehaving connection go."""

    def __init__(self, pid: int, port: int, cap: int) -> None:
        self.pid, self.port, self.cap = pid, port, cap
        self.last = self.peak = rss_bytes(pid)
        self.watched: list[Misbehaver] = []
        self.over_cap = asyncio.Event()
        self.server_gone = False

    def reset_peak(self) -> int:
        self.last = self.peak = rss_bytes(self.pid)
        return self.last

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(WATCH_SECONDS)

    def sample(self) -> None:
        try:
            self.last = rss_bytes(self.pid)
        except (OSError, RuntimeError):  # gone, or a zombie without memory
            self.server_gone = True
            return
        self.peak = max(self.peak, self.last)
        if self.last > self.cap:
            self.over_cap.set()
        watching = [m for m in self.watched if m.open]
        if not watching:
            return
        held = held_client_ports(self.port)
        now = time.perf_counter()
        for misbehaver in watching:
            if misbehaver.port in held:
                misbehaver.held = True
            elif misbehaver.held:
                misbehaver.dropped_at = now


@dataclass
class Ledger:
    """What a phase's producer created: the marked creates by (seq, user), and failures."""

    created: list[tuple[int, int]] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    stall_created: int = 0
    stall_failed: Counter[str] = field(default_factory=Counter)


@dataclass
class PhaseResult:
    name: str
    seconds: float
    sockets: int
    misbehaving: dict[str, int]
    creates_sent: int
    creates_failed: dict[str, int]
    stall_creates_sent: int
    stall_creates_failed: dict[str, int]
    deliveries_expected: int
    deliveries_received: int
    in_a_later_snapshot_only: int
    lost: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_start_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    server_cpu_share: float  # of one core
    generator_cpu_share: float
    sockets_closed_by_server: dict[str, int]  # close code: well-behaved sockets


@dataclass
class KindResult:
    kind: str
    opened: int
    failed_to_open: int
    dropped_by_server: int
    closed_by_soak: int
    drop_seconds_min: float
    drop_seconds_median: float
    drop_seconds_max: float
    sent_kb_median: float  # after the upgrade (a half upgrade: its half request)
    client_saw: dict[str, int]


@dataclass
class Round:
    """One round of phase B: the load with fresh misbehaving connections, then the settle."""

    load: PhaseResult
    misbehaving: list[KindResult]
    p99_ratio: float  # against phase A's
    settle_seconds: float  # from the end of the load's drain to the RSS reading after it
    closed_by_soak_after: float | None  # seconds into the settle, if any were left
    rss_peak_mb: float  # over the load and the settle
    rss_after_settle_mb: float
    rss_cap_hit: bool
    server_log_lines: int  # written during the round
    server_log_tracebacks: int


@dataclass
class MemoryCheck:
    """The two RSS checks, each net of the growth the load alone causes (module docstring)."""

    load_growth_mb_per_second: float  # phase A's: the same load, no misbehaving connection
    first_round_growth_mb: float  # from its start to after its settle
    first_round_load_growth_mb: float  # the load's own part of it
    first_round_net_mb: float
    first_round_target_mb: float  # RSS_COST_PER_100_MB per 100 misbehaving connections
    later_rounds_growth_mb: float  # after the last settle minus after the first (nan: 1 round)
    later_rounds_load_growth_mb: float  # over the later rounds' seconds of load
    later_rounds_net_mb: float
    later_rounds_target_mb: float = RSS_REUSE_MB


class Soak:
    """The server, the well-behaved sockets, the producer, and the phases run on them."""

    def __init__(self, plan: Plan, server: Server, settings: Settings) -> None:
        self.plan, self.server, self.settings = plan, server, settings
        run = uuid.uuid4().hex[:6]
        self.users = [f"soak-{run}-u{i}" for i in range(math.ceil(plan.sockets / plan.per_user))]
        self.flood_users = [
            f"soak-{run}-flood{i}" for i in range(math.ceil(plan.flooders / FLOOD_PER_USER))
        ]
        self.stall_users = [
            f"soak-{run}-stall{i}" for i in range(math.ceil(plan.silent / SILENT_PER_USER))
        ]
        self.receipts = Receipts()
        self.tabs: list[Tab] = []
        self.tabs_by_user: dict[int, list[Tab]] = defaultdict(list)
        self.watch = Watch(server.pid, server.port, RSS_CAP_MB * MB)
        # The round's misbehaving connections are ``watch.watched``; these keep them
        # misbehaving (floods, readers of a half upgrade's answer) and guard the RSS cap.
        self.tasks: list[asyncio.Task[None]] = []
        self.open_failures: Counter[str] = Counter()
        self._seqs = itertools.count()
        producer = mint_token(settings, f"soak-{run}-producer", scopes=(SEND_SCOPE,))
        self._headers = {"Authorization": f"Bearer {producer}"}
        self._header_lines = f"Authorization: Bearer {producer}\r\n"
        self.page_user = f"soak-{run}-reader"

    def request_for(self, user: str) -> bytes:
        return upgrade_request(self.server.port, mint_token(self.settings, user, ttl_seconds=3600))

    # The well-behaved sockets

    async def open_tabs(self) -> None:
        """Open the sockets 100 at a time, each ready once its snapshot and count are in."""
        plan = self.plan
        owners = [i // plan.per_user for i in range(plan.sockets)]
        failures: Counter[str] = Counter()
        for start in range(0, len(owners), 100):
            outcomes = await asyncio.gather(
                *(self._open_tab(user) for user in owners[start : start + 100]),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    failures[repr(outcome)[:100]] += 1
                    continue
                self.tabs.append(outcome)
                self.tabs_by_user[outcome.user].append(outcome)
        if failures:
            raise RuntimeError(f"well-behaved sockets failed to open: {dict(failures)}")

    async def _open_tab(self, user: int) -> Tab:
        tab = Tab(self.request_for(self.users[user]), user, self.receipts)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: tab, "127.0.0.1", self.server.port)
        try:
            await asyncio.wait_for(tab.ready, 60)
        except BaseException:
            tab.abort()
            raise
        return tab

    def close_tabs(self) -> None:
        for tab in self.tabs:
            tab.abort()

    # The producer

    async def produce(self, seconds: float) -> Ledger:
        """The marked creates at ``rate`` and the stall stream, both for ``seconds``."""
        ledger = Ledger()
        async with HttpPool(
            "127.0.0.1", self.server.port, PRODUCER_CONNECTIONS, self._headers
        ) as pool:
            await asyncio.gather(
                self._steady(pool, ledger, seconds), self._stall(pool, ledger, seconds)
            )
        return ledger

    async def _steady(self, pool: HttpPool, ledger: Ledger, seconds: float) -> None:
        async def create(seq: int, user: int) -> None:
            body = {
                "user_id": self.users[user],
                "type": "GENERIC_INFO",
                "message": f"soak {seq} {time.perf_counter():.6f}",
            }
            if await post(pool, orjson.dumps(body), ledger.failed):
                ledger.created.append((seq, user))

        await at_rate(
            self.plan.rate,
            seconds,
            lambda: create(next(self._seqs), random.randrange(len(self.users))),
            ledger.failed,
        )

    async def _stall(self, pool: HttpPool, ledger: Ledger, seconds: float) -> None:
        if not self.stall_users:
            return
        count = itertools.count()

        async def create() -> None:
            body = {
                "user_ids": self.stall_users,
                "type": "GENERIC_INFO",
                "message": f"stall {next(count)} {STALL_MESSAGE}",
            }
            if await post(pool, orjson.dumps(body), ledger.stall_failed):
                ledger.stall_created += 1

        await at_rate(self.plan.stall_rate, seconds, create, ledger.stall_failed)

    async def drain(self, ledger: Ledger) -> None:
        """Wait until every expected delivery is in, ``DRAIN_SECONDS`` at most."""
        expected = sum(len(self.tabs_by_user[user]) for _, user in ledger.created)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            arrivals = self.receipts.arrivals
            if sum(arrivals[seq] for seq, _ in ledger.created) >= expected:
                return
            await asyncio.sleep(0.2)

    # The phases

    async def phase(
        self, name: str, before_load: Callable[[], Awaitable[None]] | None = None
    ) -> PhaseResult:
        rss_start = self.watch.reset_peak()
        if before_load is not None:
            await before_load()
        server_cpu, generator_cpu = cpu_seconds(self.server.pid), time.process_time()
        duplicates = sum(tab.duplicates for tab in self.tabs)
        started = time.perf_counter()
        ledger = await self.produce(self.plan.seconds)
        await self.drain(ledger)
        elapsed = time.perf_counter() - started
        if self.watch.server_gone:
            raise RuntimeError(f"the server exited during phase {name}; see {self.server.log}")
        server_cpu = cpu_seconds(self.server.pid) - server_cpu
        generator_cpu = time.process_time() - generator_cpu

        expected = received = snapshot_only = lost = 0
        for seq, user in ledger.created:
            for tab in self.tabs_by_user[user]:
                expected += 1
                if seq in tab.seen:
                    received += 1
                elif seq in tab.in_snapshot:
                    snapshot_only += 1
                else:
                    lost += 1
        seqs = {seq for seq, _ in ledger.created}
        latencies = [latency for seq, latency in self.receipts.latencies if seq in seqs]
        closed = Counter(
            str(tab.close_code)
            for tab in self.tabs
            if tab.closed_at is not None and tab.closed_at >= started
        )
        misbehaving = Counter(m.kind for m in self.watch.watched)
        return PhaseResult(
            name=name,
            seconds=elapsed,
            sockets=len(self.tabs),
            misbehaving=dict(misbehaving),
            creates_sent=len(ledger.created) + ledger.failed.total(),
            creates_failed=dict(ledger.failed),
            stall_creates_sent=ledger.stall_created + ledger.stall_failed.total(),
            stall_creates_failed=dict(ledger.stall_failed),
            deliveries_expected=expected,
            deliveries_received=received,
            in_a_later_snapshot_only=snapshot_only,
            lost=lost,
            duplicates=sum(tab.duplicates for tab in self.tabs) - duplicates,
            p50_ms=statistics.median(latencies) * 1000 if latencies else math.nan,
            p99_ms=percentile(latencies, 0.99) * 1000 if latencies else math.nan,
            max_ms=max(latencies) * 1000 if latencies else math.nan,
            rss_start_mb=rss_start / MB,
            rss_peak_mb=self.watch.peak / MB,
            rss_end_mb=self.watch.last / MB,
            server_cpu_share=server_cpu / elapsed,
            generator_cpu_share=generator_cpu / elapsed,
            sockets_closed_by_server=dict(closed),
        )

    async def warm_up(self) -> None:
        """Connection pools, first queries, caches: a short load nobody measures."""
        ledger = await self.produce(self.plan.warmup)
        await self.drain(ledger)

    async def run_round(self, number: int, a: PhaseResult) -> Round:
        """Phase B once: fresh misbehaving connections and the load, then the settle."""
        gc.collect()  # between phases, where no one is timing
        self.watch.watched, self.tasks = [], []
        log_before = self.log_lines()
        load = await self.phase(f"B{number}", before_load=self.misbehave)
        settle_seconds, closed_after = await self.settle()
        written = self.log_lines()[len(log_before) :]
        return Round(
            server_log_lines=len(written),
            server_log_tracebacks=sum("Traceback" in line for line in written),
            load=load,
            misbehaving=self.kinds(),
            p99_ratio=ratio(load.p99_ms, a.p99_ms),
            settle_seconds=settle_seconds,
            closed_by_soak_after=closed_after,
            rss_peak_mb=self.watch.peak / MB,
            rss_after_settle_mb=self.watch.last / MB,
            rss_cap_hit=self.watch.over_cap.is_set(),
        )

    def log_lines(self) -> list[str]:
        return self.server.log.read_text(errors="replace").splitlines()

    async def seed_long_page(self) -> None:
        """A page of long items for the answer readers to ask for."""
        item = {"user_id": self.page_user, "type": "GENERIC_INFO", "message": "m" * 2000}
        item["link_url"] = "/" + "l" * 1999
        body = orjson.dumps(item)
        async with HttpPool("127.0.0.1", self.server.port, 4, self._headers) as pool:
            for _ in range(PAGE_ITEMS):
                status, _ = await pool.post(CREATE_PATH, body)
                assert status == 201, status

    def page_request(self) -> bytes:
        token = mint_token(self.settings, self.page_user, ttl_seconds=3600)
        return (
            f"GET {CREATE_PATH}?limit={PAGE_ITEMS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()

    # The misbehaving connections

    async def misbehave(self) -> None:
        """Open every misbehaving connection and start it misbehaving."""
        plan = self.plan
        flood_users = [self.flood_users[i // FLOOD_PER_USER] for i in range(plan.flooders)]
        silent_users = [self.stall_users[i // SILENT_PER_USER] for i in range(plan.silent)]
        planned = (
            [(FLOOD, self._flooder(user)) for user in flood_users]
            + [(SILENT, self._silent(user)) for user in silent_users]
            + [(HALF, self._half_upgrade()) for _ in range(plan.half_upgrades)]
            + [(UNREAD, self._unread_answer()) for _ in range(plan.unread_answers)]
            + [(HUGE, self._huge_body()) for _ in range(plan.huge_bodies)]
            + [(NO_SIGN_IN, self._never_signs_in()) for _ in range(plan.never_sign_in)]
            + [(GONE, self._pipelined_gone()) for _ in range(plan.pipelined_gone)]
            + [(PIPELINE, self._pipelined_creates()) for _ in range(plan.pipelined_creates)]
            + [(READS, self._read_answer()) for _ in range(plan.read_answers)]
        )
        opened = await asyncio.gather(*(start for _, start in planned), return_exceptions=True)
        self.open_failures = Counter(
            kind
            for (kind, _), outcome in zip(planned, opened, strict=True)
            if isinstance(outcome, BaseException)
        )
        for failure in {repr(o)[:120] for o in opened if isinstance(o, BaseException)}:
            print(f"  a misbehaving connection failed to open: {failure}", file=sys.stderr)
        self.tasks.append(asyncio.create_task(self._guard_cap()))

    async def _guard_cap(self) -> None:
        """A server that balloons is not left to eat the shared machine."""
        await self.watch.over_cap.wait()
        print(
            f"  the server's RSS passed {RSS_CAP_MB} MB: closing the misbehaving", file=sys.stderr
        )
        self.stop_misbehaving()

    def stop_misbehaving(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for misbehaver in self.watch.watched:
            misbehaver.close()

    async def _dial(self, kind: str, receive_buffer: int | None = None) -> Misbehaver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connecting: the window scale is agreed in the handshake.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.server.port))
        except OSError:
            sock.close()
            raise
        return Misbehaver(kind, sock, sock.getsockname()[1])

    async def _upgrade(self, misbehaver: Misbehaver, user: str, token: str | None = None) -> None:
        """Send the upgrade and read its answer's head, and nothing after it on purpose
        (frames that share the head's packet are read with it)."""
        loop = asyncio.get_running_loop()
        self.watch.watched.append(misbehaver)
        request = self.request_for(user)
        if token is not None:
            request = upgrade_request(self.server.port, token)
        try:
            async with asyncio.timeout(30):
                await loop.sock_sendall(misbehaver.sock, request)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await loop.sock_recv(misbehaver.sock, 4096)
                    if not chunk:
                        raise ConnectionError("closed during the upgrade")
                    head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                raise ConnectionError(f"upgrade refused: {status}")
        except BaseException:
            self.watch.watched.remove(misbehaver)
            misbehaver.sock.close()
            raise
        misbehaver.held = True  # accepted: from now on, its absence is a drop
        misbehaver.started = time.perf_counter()

    async def _flooder(self, user: str) -> None:
        misbehaver = await self._dial(FLOOD, FLOOD_RECEIVE_BUFFER)
        await self._upgrade(misbehaver, user)
        self.tasks.append(asyncio.create_task(flood(misbehaver)))

    async def _silent(self, user: str) -> None:
        await self._upgrade(await self._dial(SILENT), user)

    async def _half_upgrade(self) -> None:
        misbehaver = await self._dial(HALF)
        # The request line, Host and Upgrade: half the headers of an upgrade.
        lines = self.request_for(self.users[0]).split(b"\r\n")
        self.watch.watched.append(misbehaver)
        half = b"\r\n".join(lines[:3]) + b"\r\n"
        await asyncio.get_running_loop().sock_sendall(misbehaver.sock, half)
        misbehaver.sent = len(half)
        misbehaver.started = time.perf_counter()
        self.tasks.append(asyncio.create_task(read_answer(misbehaver)))

    async def _unread_answer(self) -> None:
        misbehaver = await self._dial(UNREAD, FLOOD_RECEIVE_BUFFER)
        await self._start(misbehaver, self.page_request())

    async def _read_answer(self) -> None:
        misbehaver = await self._dial(READS)
        await self._start(misbehaver, self.page_request())
        self.tasks.append(asyncio.create_task(read_answer(misbehaver)))

    async def _huge_body(self) -> None:
        misbehaver = await self._dial(HUGE)
        body = orjson.dumps({"user_ids": [""] * 1_000_000, "type": "GENERIC_INFO", "message": "x"})
        request = (
            f"POST {CREATE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self._header_lines}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        await self._start(misbehaver, request)
        self.tasks.append(asyncio.create_task(read_answer(misbehaver)))

    async def _never_signs_in(self) -> None:
        misbehaver = await self._dial(NO_SIGN_IN)
        await self._upgrade(misbehaver, "", token=NOT_A_JWT)

    async def _pipelined_gone(self) -> None:
        misbehaver = await self._dial(GONE, FLOOD_RECEIVE_BUFFER)
        await self._start(misbehaver, self.page_request() * 3)

        async def reset_later() -> None:
            await asyncio.sleep(1.0)
            misbehaver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            misbehaver.close()

        self.tasks.append(asyncio.create_task(reset_later()))

    async def _pipelined_creates(self) -> None:
        misbehaver = await self._dial(PIPELINE)
        self.watch.watched.append(misbehaver)
        misbehaver.held = True
        misbehaver.started = time.perf_counter()
        body = orjson.dumps(
            {"user_id": self.page_user + "-pipe", "type": "GENERIC_INFO", "message": "p"}
        )
        one = (
            f"POST {CREATE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self._header_lines}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.tasks.append(asyncio.create_task(pipeline(misbehaver, one * PIPELINED_CREATES)))

    async def _start(self, misbehaver: Misbehaver, request: bytes) -> None:
        """Watch ``misbehaver`` from now on, and send ``request`` (its answer is not read)."""
        self.watch.watched.append(misbehaver)
        misbehaver.held = True
        await asyncio.get_running_loop().sock_sendall(misbehaver.sock, request)
        misbehaver.sent = len(request)
        misbehaver.started = time.perf_counter()

    async def settle(self) -> tuple[float, float | None]:
        """Give the server ``settle`` seconds to drop the round's misbehaving connections,
        then close what is left: the settle's seconds, and when the soak closed any."""
        started = time.perf_counter()
        deadline = started + self.plan.settle
        misbehavers = self.watch.watched
        while time.perf_counter() < deadline and any(m.open for m in misbehavers):
            if self.watch.over_cap.is_set():
                break
            await asyncio.sleep(WATCH_SECONDS)
        closed_after = None
        if any(m.open for m in misbehavers):
            closed_after = time.perf_counter() - started
        self.stop_misbehaving()
        await asyncio.sleep(AFTER_SETTLE_SECONDS)
        return time.perf_counter() - started, closed_after

    def kinds(self) -> list[KindResult]:
        results = []
        for kind in KINDS:
            group = [m for m in self.watch.watched if m.kind == kind]
            dropped = [m.dropped_at - m.started for m in group if m.dropped_at is not None]
            results.append(
                KindResult(
                    kind=kind,
                    opened=len(group),
                    failed_to_open=self.open_failures[kind],
                    dropped_by_server=len(dropped),
                    closed_by_soak=sum(m.closed_by_soak for m in group),
                    drop_seconds_min=min(dropped, default=math.nan),
                    drop_seconds_median=statistics.median(dropped) if dropped else math.nan,
                    drop_seconds_max=max(dropped, default=math.nan),
                    sent_kb_median=statistics.median(m.sent for m in group) / 1024
                    if group
                    else math.nan,
                    client_saw=dict(Counter(m.client_saw for m in group if m.client_saw)),
                )
            )
        return results


async def at_rate(
    rate: float,
    seconds: float,
    create: Callable[[], Coroutine[Any, Any, None]],
    failed: Counter[str],
) -> None:
    """Start ``create`` ``rate`` times a second for ``seconds``, then wait for them all."""
    calls: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        calls.append(asyncio.create_task(create()))
    if not calls:
        return
    _, pending = await asyncio.wait(calls, timeout=ANSWER_PATIENCE)
    for call in pending:
        call.cancel()
    if pending:
        failed[f"no answer in {ANSWER_PATIENCE:g} s"] += len(pending)


async def post(pool: HttpPool, body: bytes, failed: Counter[str]) -> bool:
    """One create; a failure is counted by its cause rather than raised."""
    try:
        status, _ = await pool.post(CREATE_PATH, body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        failed[type(error).__name__] += 1
        return False
    if status != 201:
        failed[f"HTTP {status}"] += 1
        return False
    return True


async def flood(misbehaver: Misbehaver) -> None:
    """Pings as fast as the kernel takes them, until the server drops the connection."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            await loop.sock_sendall(misbehaver.sock, FLOOD_CHUNK)
            misbehaver.sent += len(FLOOD_CHUNK)
    except OSError as error:
        misbehaver.saw(type(error).__name__)


async def read_answer(misbehaver: Misbehaver) -> None:
    """A half upgrade reads what the server answers, if anything, until it closes."""
    loop = asyncio.get_running_loop()
    answer = b""
    try:
        while chunk := await loop.sock_recv(misbehaver.sock, 4096):
            answer += chunk
    except OSError as error:
        misbehaver.saw(type(error).__name__)
        return
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    misbehaver.saw(f"{status} then end of stream" if status else "end of stream")


async def pipeline(misbehaver: Misbehaver, requests: bytes) -> None:
    """Writes ``requests`` in 20 KB pieces and reads every answer; notes their statuses."""
    loop = asyncio.get_running_loop()
    answers = b""
    try:
        for start in range(0, len(requests), 20_000):
            await loop.sock_sendall(misbehaver.sock, requests[start : start + 20_000])
            await asyncio.sleep(0.005)
        while chunk := await loop.sock_recv(misbehaver.sock, 65536):
            answers += chunk
    except OSError as error:
        misbehaver.saw(type(error).__name__)
        return
    statuses = Counter(re.findall(rb"HTTP/1\.1 (\d{3})", answers))
    misbehaver.saw(", ".join(f"{n}x {status.decode()}" for status, n in statuses.items()))


async def server_counters(port: int) -> dict[str, float]:
    """Campana's counters and gauges from ``/metrics`` (histograms left out); {} if none."""
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return {}
    counters: dict[str, float] = {}
    for line in answer.partition(b"\r\n\r\n")[2].decode(errors="replace").splitlines():
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        if not metric.startswith("campana_") or metric.endswith(
            ("_bucket", "_sum", "_count", "_created")
        ):
            continue
        with contextlib.suppress(ValueError):
            counters[name] = float(value)
    return counters


# The report


def ratio(later: float, earlier: float) -> float:
    return later / earlier if earlier and not math.isnan(earlier) else math.nan


def figure(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def counted(counts: dict[str, int]) -> str:
    """A total and its parts: ``3 (2x HTTP 500, 1x TimeoutError)``."""
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{n}x {why}' for why, n in counts.items())})"


def verdict(ok: bool | None) -> str:
    return "not measured (needs 2 rounds)" if ok is None else "ok" if ok else "MISSED"


def check_memory(a: PhaseResult, rounds: list[Round]) -> MemoryCheck:
    # A negative growth in A (glibc trimming its heap) would demand that the rounds shrink.
    per_second = max(0.0, a.rss_end_mb - a.rss_start_mb) / a.seconds
    first, last = rounds[0], rounds[-1]
    first_growth = first.rss_after_settle_mb - first.load.rss_start_mb
    first_load = per_second * first.load.seconds
    later_growth = last.rss_after_settle_mb - first.rss_after_settle_mb
    later_load = per_second * sum(r.load.seconds for r in rounds[1:])
    if len(rounds) == 1:
        later_growth = later_load = math.nan
    return MemoryCheck(
        load_growth_mb_per_second=per_second,
        first_round_growth_mb=first_growth,
        first_round_load_growth_mb=first_load,
        first_round_net_mb=first_growth - first_load,
        first_round_target_mb=RSS_COST_PER_100_MB * sum(k.opened for k in first.misbehaving) / 100,
        later_rounds_growth_mb=later_growth,
        later_rounds_load_growth_mb=later_load,
        later_rounds_net_mb=later_growth - later_load,
    )


def check_targets(a: PhaseResult, rounds: list[Round], memory: MemoryCheck) -> dict[str, Any]:
    """Each target met (True), missed (False) or not measured (None: reuse, one round)."""
    reuse = memory.later_rounds_net_mb
    return {
        "p99_ratio_at_most_2_every_round": all(r.p99_ratio <= P99_TARGET for r in rounds),
        "no_loss": a.lost == 0 and all(r.load.lost == 0 for r in rounds),
        "every_misbehaving_connection_dropped": all(
            k.dropped_by_server == k.opened
            for r in rounds
            for k in r.misbehaving
            if k.kind not in CLOSED_BY_CLIENT
        ),
        "no_traceback_in_the_server_log": all(r.server_log_tracebacks == 0 for r in rounds),
        "rss_first_round_within_5_mb_per_100": memory.first_round_net_mb
        <= memory.first_round_target_mb,
        "rss_later_rounds_reuse_within_2_mb": None if math.isnan(reuse) else reuse <= RSS_REUSE_MB,
    }


def report_table(
    plan: Plan,
    database: str,
    overrides: dict[str, str],
    a: PhaseResult,
    rounds: list[Round],
    memory: MemoryCheck,
    targets: dict[str, Any],
    moved: dict[str, tuple[float, float]],
    log: Path,
) -> str:
    users = len(range(0, plan.sockets, plan.per_user))
    stall_users = math.ceil(plan.silent / SILENT_PER_USER)
    phases = [a, *(r.load for r in rounds)]
    rows = [
        f"Campana soak on {database}: {plan.rate:g} creates/s for the well-behaved sockets' "
        f"users and {plan.stall_rate:g}/s of 1.5 KB to the {stall_users} users of the "
        f"non-readers, {plan.seconds:g} s of load a phase, A then {len(rounds)} rounds of B, "
        f"one server process (log: {log})"
        + "".join(f", {name}={value}" for name, value in overrides.items()),
        "",
        "| figure | A: baseline | "
        + " | ".join(f"B, round {n}" for n in range(1, len(rounds) + 1))
        + " |",
        "|---|" + "---|" * len(phases),
    ]

    def row(label: str, cells: Iterable[str]) -> None:
        rows.append(f"| {label} | {' | '.join(cells)} |")

    row(
        f"well-behaved sockets ({users} users, {plan.per_user} each)",
        (f"{p.sockets:,}" for p in phases),
    )
    row("misbehaving connections", (counted(p.misbehaving) for p in phases))
    row(
        "creates sent (failed)",
        (f"{p.creates_sent:,} ({counted(p.creates_failed)})" for p in phases),
    )
    row(
        "1.5 KB creates to the non-readers' users (failed)",
        (f"{p.stall_creates_sent:,} ({counted(p.stall_creates_failed)})" for p in phases),
    )
    row("deliveries expected", (f"{p.deliveries_expected:,}" for p in phases))
    row("deliveries received", (f"{p.deliveries_received:,}" for p in phases))
    row("missed live, in a later snapshot", (f"{p.in_a_later_snapshot_only:,}" for p in phases))
    row(f"lost (not in after {DRAIN_SECONDS:g} s)", (f"{p.lost:,}" for p in phases))
    row("duplicates", (f"{p.duplicates:,}" for p in phases))
    row("create-to-receipt p50 (ms)", (figure(p.p50_ms) for p in phases))
    row("create-to-receipt p99 (ms)", (figure(p.p99_ms) for p in phases))
    row("create-to-receipt max (ms)", (figure(p.max_ms) for p in phases))
    row("p99 / p99 of A", ["", *(f"{figure(r.p99_ratio, 2)}x" for r in rounds)])
    row(
        "server RSS start / peak / end (MB; a round ends after its settle)",
        [
            f"{a.rss_start_mb:.1f} / {a.rss_peak_mb:.1f} / {a.rss_end_mb:.1f}",
            *(
                f"{r.load.rss_start_mb:.1f} / {r.rss_peak_mb:.1f} / {r.rss_after_settle_mb:.1f}"
                for r in rounds
            ),
        ],
    )
    row("server CPU (share of one core)", (f"{p.server_cpu_share:.0%}" for p in phases))
    row("generator CPU (share of one core)", (f"{p.generator_cpu_share:.0%}" for p in phases))
    row(
        "well-behaved sockets closed by the server",
        (counted(p.sockets_closed_by_server) for p in phases),
    )
    row(
        "server log: lines (tracebacks) written in the round",
        ["-", *(f"{r.server_log_lines} ({r.server_log_tracebacks})" for r in rounds)],
    )
    row(
        "settle (s), and when the soak closed those left",
        [
            "-",
            *(
                f"{r.settle_seconds:.0f}, "
                + (
                    f"at {r.closed_by_soak_after:.0f}"
                    if r.closed_by_soak_after is not None
                    else "none left"
                )
                for r in rounds
            ),
        ],
    )

    rows += [
        "",
        "Misbehaving connections (dropped: the server process let the connection go; "
        "seconds from the start of the misbehaviour, to within "
        f"{WATCH_SECONDS:g} s):",
        "",
        "| round | kind | opened | dropped by the server | seconds to drop: min / median / max "
        "| left open, closed by the soak | sent, median (KB) | the client saw |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, played in enumerate(rounds, 1):
        for kind in played.misbehaving:
            opened_text = f"{kind.opened}" + (
                f" ({kind.failed_to_open} failed to open)" if kind.failed_to_open else ""
            )
            seconds = " / ".join(
                figure(s, 2)
                for s in (kind.drop_seconds_min, kind.drop_seconds_median, kind.drop_seconds_max)
            )
            saw = ", ".join(f"{n}x {what}" for what, n in kind.client_saw.items()) or "-"
            rows.append(
                f"| {number} | {kind.kind} | {opened_text} | {kind.dropped_by_server} | "
                f"{seconds} | {kind.closed_by_soak} | {figure(kind.sent_kb_median)} | {saw} |"
            )
    rows += ["", "Expected of the server:", ""]
    rows += [f"- {kind}: {expected}" for kind, expected in EXPECTED.items()]

    first, last = rounds[0], rounds[-1]
    a_growth = a.rss_end_mb - a.rss_start_mb
    rows += [
        "",
        "Memory: CPython keeps freed memory in its arenas, and glibc in its heap, for the "
        "next allocations: the RSS is not expected to fall back once the misbehaving "
        "connections are gone. The checks ask instead whether the rounds reuse it: a leak "
        "would add about the first round's cost every round. Both are net of the load's "
        f"own growth: phase A, the same load without them, grew the RSS {a_growth:+.1f} MB "
        f"in {a.seconds:.0f} s ({memory.load_growth_mb_per_second:.3f} MB/s).",
        "",
        "- p99 / p99 of A, every round: "
        + ", ".join(f"{figure(r.p99_ratio, 2)}x" for r in rounds)
        + f" (target at most {P99_TARGET:g}): "
        + verdict(targets["p99_ratio_at_most_2_every_round"]),
        f"- deliveries lost: A {a.lost}, rounds "
        + ", ".join(str(r.load.lost) for r in rounds)
        + f": {verdict(targets['no_loss'])}",
        "- misbehaving connections dropped by the server, each round (those the client closes "
        "itself aside): "
        + ", ".join(
            f"{sum(k.dropped_by_server for k in r.misbehaving if k.kind not in CLOSED_BY_CLIENT)}"
            f" of {sum(k.opened for k in r.misbehaving if k.kind not in CLOSED_BY_CLIENT)}"
            for r in rounds
        )
        + f": {verdict(targets['every_misbehaving_connection_dropped'])}",
        "- tracebacks in the server's log, each round: "
        + ", ".join(str(r.server_log_tracebacks) for r in rounds)
        + f": {verdict(targets['no_traceback_in_the_server_log'])}",
        "- RSS cost of the first round, what its misbehaving connections took: "
        f"{memory.first_round_growth_mb:+.1f} MB from its start to after its settle, less "
        f"{memory.first_round_load_growth_mb:+.1f} MB for the load alone over its "
        f"{first.load.seconds:.0f} s of load: {memory.first_round_net_mb:+.1f} MB (target within "
        f"{memory.first_round_target_mb:.1f} MB, {RSS_COST_PER_100_MB:g} MB per 100 "
        f"misbehaving connections): {verdict(targets['rss_first_round_within_5_mb_per_100'])}",
    ]
    reuse = "- RSS reuse, the leak check, whether later rounds reuse the memory the first took: "
    if len(rounds) == 1:
        reuse += verdict(None)
    else:
        reuse += (
            f"{last.rss_after_settle_mb:.1f} MB after the last round's settle against "
            f"{first.rss_after_settle_mb:.1f} MB after the first's, "
            f"{memory.later_rounds_growth_mb:+.1f} MB, less "
            f"{memory.later_rounds_load_growth_mb:+.1f} MB for the load alone over the later "
            f"rounds' {sum(r.load.seconds for r in rounds[1:]):.0f} s of load: "
            f"{memory.later_rounds_net_mb:+.1f} MB (target within {RSS_REUSE_MB:g} MB): "
            + verdict(targets["rss_later_rounds_reuse_within_2_mb"])
        )
    rows.append(reuse)
    if last.rss_cap_hit:
        rows.append(
            f"- the server's RSS passed {RSS_CAP_MB} MB in round {len(rounds)}: its misbehaving "
            "connections were closed by the soak then, and no further round ran"
        )
    if moved:
        shown = ", ".join(f"{name} {old:g} -> {new:g}" for name, (old, new) in moved.items())
        rows.append(f"- server counters that moved over the rounds: {shown}")
    return "\n".join(rows)


def finite(value: Any) -> Any:
    """JSON has no NaN: null instead, through nested dicts and lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


async def run(
    plan: Plan, postgres: bool, overrides: dict[str, str], data_dir: Path
) -> tuple[str, dict[str, Any]]:
    """Phase A and the rounds of B on one server whose database and log are in ``data_dir``."""
    secret = "soak-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")}
    env |= {"CAMPANA_JWT_SECRET": secret, "CAMPANA_DATA_DIR": str(data_dir), **overrides}
    database = "SQLite (embedded)"
    if postgres:
        await ensure_database(SOAK_POSTGRES_URL, fresh=True)
        env["CAMPANA_DATABASE_URL"] = SOAK_POSTGRES_URL
        migrate = [sys.executable, "-m", "campana.cli", "migrate"]
        subprocess.run(migrate, env=env, check=True, capture_output=True)
        database = f"PostgreSQL ({SOAK_POSTGRES_URL.rsplit('/', 1)[1]})"
    port = free_port()
    serve = [sys.executable, "-m", "campana.cli", "serve", "--log-level", "warning"]
    log = data_dir / "server.log"
    server = Server([*serve, "--port", str(port)], port, env, log)
    await server.start()
    soak = Soak(plan, server, Settings(jwt_secret=secret))
    watching = asyncio.create_task(soak.watch.run())
    rounds: list[Round] = []
    try:
        print(f"opening {plan.sockets} well-behaved sockets…", file=sys.stderr)
        await soak.open_tabs()
        await soak.seed_long_page()
        await soak.warm_up()
        gc.collect()  # between phases, where no one is timing
        print(f"phase A: {plan.seconds:g} s of load…", file=sys.stderr)
        a = await soak.phase("A")
        counters_before = await server_counters(port)
        for number in range(1, plan.rounds + 1):
            print(
                f"phase B, round {number} of {plan.rounds}: {plan.seconds:g} s of load with "
                f"misbehaving connections, then {plan.settle:g} s at most to drop them…",
                file=sys.stderr,
            )
            rounds.append(await soak.run_round(number, a))
            if soak.watch.over_cap.is_set():
                break
        counters_after = await server_counters(port)
    finally:
        soak.stop_misbehaving()
        watching.cancel()
        soak.close_tabs()
        await server.stop(patience=30)
    moved = {
        name: (counters_before.get(name, 0.0), value)
        for name, value in counters_after.items()
        if value != counters_before.get(name, 0.0)
    }
    memory = check_memory(a, rounds)
    targets = check_targets(a, rounds, memory)
    table = report_table(plan, database, overrides, a, rounds, memory, targets, moved, log)
    summary = {
        "plan": asdict(plan),
        "database": database,
        "server_settings": overrides,
        "phase_a": asdict(a),
        "rounds": [asdict(played) for played in rounds],
        "expected_of_the_server": EXPECTED,
        "memory": asdict(memory),
        "server_counters_moved_over_the_rounds": {k: list(v) for k, v in moved.items()},
        "targets": targets,
        "server_log": str(log),
    }
    return table, finite(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="300 sockets, 20 s a phase")
    parser.add_argument(
        "--postgres", action="store_true", help=f"use {SOAK_POSTGRES_URL} (emptied first)"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--sockets", type=int, help="well-behaved sockets")
    parser.add_argument("--rate", type=float, help="creates per second")
    parser.add_argument("--seconds", type=float, help="of load, a phase")
    parser.add_argument("--settle", type=float, help="seconds the server has to drop them")
    parser.add_argument("--rounds", type=int, help="of phase B, each with fresh misbehaving (2)")
    parser.add_argument(
        "--only",
        help="comma-separated misbehaviours to play, of: " + ", ".join(PLAN_FIELDS),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CAMPANA_NAME=VALUE",
        help="a server setting (repeatable); the server gets no other CAMPANA_* variable",
    )
    args = parser.parse_args()
    overrides: dict[str, str] = {}
    for item in args.set:
        name, equals, value = item.partition("=")
        if not name.startswith("CAMPANA_") or not equals:
            parser.error(f"--set takes CAMPANA_NAME=VALUE, not {item!r}")
        overrides[name] = value
    plan = QUICK if args.quick else Plan()
    chosen = {
        name: getattr(args, name)
        for name in ("sockets", "rate", "seconds", "settle", "rounds")
        if getattr(args, name) is not None
    }
    plan = replace(plan, **chosen)
    if args.only:
        kept = {name.strip() for name in args.only.split(",")}
        if not kept <= set(PLAN_FIELDS):
            parser.error(f"--only takes names of: {', '.join(PLAN_FIELDS)}")
        plan = replace(
            plan, **{field: 0 for name, field in PLAN_FIELDS.items() if name not in kept}
        )
        if "reads" in kept:  # as many as the answers never read, to compare the two
            plan = replace(plan, read_answers=(QUICK if args.quick else Plan()).unread_answers)
    if plan.rounds < 1:
        parser.error("--rounds takes 1 or more")
    # The generator holds every client socket: its own garbage collections would be
    # measured as the server's latency.
    gc.disable()
    data_dir = Path(tempfile.mkdtemp(prefix="campana-soak-"))
    try:
        table, summary = asyncio.run(run(plan, args.postgres, overrides, data_dir))
    finally:
        for database_file in data_dir.glob("campana.sqlite3*"):  # the server's log stays
            database_file.unlink()
    out: TextIO = sys.stderr if args.json else sys.stdout
    print(table, file=out)
    if args.json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
