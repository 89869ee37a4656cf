"""Campana against the ceiling and the usual alternative, side by side, in one command.

Scenarios (each system in turn, same machine, same load generator):

1. ``memory``: RSS growth per open socket, after its opening frames, at each size;
2. ``fanout``: notifications at a fixed rate to random users, then as fast as the
   producers can: delivered frames per second, create-to-receipt latency p50/p99/max;
3. ``broadcast``: one producer call naming every user: time until the last socket has it;
4. ``storm``: with every tab connected, the server restarts (SIGTERM, exit, start, port
   open), then every tab reconnects: time until all have their opening frames, failures.
   The reconnects use a bare client (common.BareWebSocket) and keep at most
   ``--storm-in-flight`` handshakes open, below the accept backlog, so that the figure is
   the server's pace rather than the generator's or the kernel's SYN retransmits;
5. ``cross``: scenario 2 on two server processes sharing PostgreSQL and Redis, tabs split
   evenly, producers calling the first only, so half the deliveries cross Redis.

Systems: ``ceiling`` (bench/ceiling.py: ``websockets`` alone, one process, nothing
shared, so scenario 5 shows its one-process fan-out), ``socketio`` (bench/alternative.py:
python-socketio with its Redis manager, FastAPI, SQLAlchemy) and ``campana``
(``campana serve``), the last two on the local PostgreSQL and Redis. Every server listens
with the same accept backlog (common.BACKLOG). CAMPANA_BENCH_POSTGRES_URL and
CAMPANA_BENCH_REDIS_URL say where; the default database, ``campana_bench``, is created if
missing (the test suite empties ``test``, so the two may run apart). Usage::

    .venv/bin/python bench/compare.py --sizes 1000,5000,10000 --rate 1000 --seconds 10

A quick check: ``--systems ceiling,campana --scenarios fanout --sizes 1000 --seconds 3``.
``--profile DIR`` runs py-spy on Campana's processes during each step (see profiling.py);
its figures then carry the profiler's cost and are for reading, not for RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jwt
import orjson
from common import (
    POSTGRES_URL,
    BareWebSocket,
    HttpPool,
    Server,
    cpu_seconds,
    ensure_database,
    free_port,
    machine_cpu_seconds,
    percentile,
    rss_bytes,
    tcp_counters,
)
from profiling import Profiler
from websockets.asyncio.client import ClientConnection, connect

REDIS_URL = os.environ.get("CAMPANA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CEILING = str(Path(__file__).with_name("ceiling.py"))
ALTERNATIVE = str(Path(__file__).with_name("alternative.py"))
SYSTEMS = ("ceiling", "socketio", "campana")
SCENARIOS = ("memory", "fanout", "broadcast", "storm", "cross")
PRODUCERS = 32
CROSS = "cross-instance "  # scenario 5's metrics: scenario 2's, so named
TOKEN_TTL = 4 * 3600  # minted once per user, reused by the storm at the end of a long run
# Handshakes the storm keeps open at once. Half the accept backlog: the kernel never drops
# a SYN, so the figure is the server's pace, not the 1 s, 3 s, 7 s... of SYN retransmits.
STORM_IN_FLIGHT = 1000
STORM_PATIENCE = 300.0  # seconds after which a tab without its opening frames has failed
# The kernel's own account of a storm: accept-queue overflows drop SYNs, which the clients
# send again 1 s, 3 s, 7 s... later.
KERNEL_SIGNS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPSynRetrans")
# No client pings (the generator's own), and patience while 10,000 tabs open on 2 cores.
CLIENT: dict[str, Any] = {
    "compression": None,
    "max_size": None,
    "ping_interval": None,
    "open_timeout": 300,
}


class TabSocket(Protocol):
    """What opening a tab needs: ``websockets``' client and BareWebSocket both have it."""

    async def recv(self) -> str | bytes: ...
    async def send(self, message: str, /) -> None: ...


Tab = TypeVar("Tab", bound=TabSocket)
Dial = Callable[[str], Awaitable[Tab]]


async def dial_websockets(url: str) -> ClientConnection:
    return await connect(url, **CLIENT)


class Producer(Protocol):
    async def create(self, user_ids: list[str], message: str) -> None: ...


class System(Protocol):
    name: str
    scales_out: bool  # several processes can share the work through a broker
    env: dict[str, str]

    def prepare(self) -> None: ...
    def command(self, port: int) -> list[str]: ...
    async def open_tab(self, dial: Dial[Tab], port: int, user: str) -> Tab: ...
    def decode(self, text: str) -> tuple[str, Any] | None: ...
    def producer(self, port: int) -> contextlib.AbstractAsyncContextManager[Producer]: ...


class PlainFrames:
    """Campana's wire format: ``{"event", "payload"}`` text frames, two to open."""

    def tab_url(self, port: int, user: str) -> str:
        raise NotImplementedError

    async def open_tab(self, dial: Dial[Tab], port: int, user: str) -> Tab:
        tab = await dial(self.tab_url(port, user))
        await tab.recv()
        await tab.recv()
        return tab

    def decode(self, text: str) -> tuple[str, Any] | None:
        frame = orjson.loads(text)
        return frame["event"], frame["payload"]


class Ceiling(PlainFrames):
    name = "ceiling"
    scales_out = False

    def __init__(self) -> None:
        self.env = dict(os.environ)

    def prepare(self) -> None:
        pass

    def command(self, port: int) -> list[str]:
        return [sys.executable, CEILING, str(port)]

    def tab_url(self, port: int, user: str) -> str:
        return f"ws://127.0.0.1:{port}/?user={user}"

    @contextlib.asynccontextmanager
    async def producer(self, port: int) -> AsyncIterator[Producer]:
        connections = [
            await connect(f"ws://127.0.0.1:{port}/produce", compression=None, max_size=None)
            for _ in range(PRODUCERS)
        ]
        idle: asyncio.Queue[ClientConnection] = asyncio.Queue()
        for connection in connections:
            idle.put_nowait(connection)

        class SocketProducer:
            async def create(self, user_ids: list[str], message: str) -> None:
                connection = await idle.get()
                try:
                    await connection.send(orjson.dumps({"user_ids": user_ids, "message": message}))
                    await connection.recv()
                finally:
                    idle.put_nowait(connection)

        yield SocketProducer()
        for connection in connections:
            await connection.close()


class Campana(PlainFrames):
    name = "campana"
    scales_out = True

    def __init__(self) -> None:
        # Imported here so that a quick check of the other systems still runs while the
        # service's code is being changed.
        from campana.auth import SEND_SCOPE, mint_token
        from campana.settings import Settings

        self._mint, self._send_scope = mint_token, SEND_SCOPE
        self.settings = Settings(jwt_secret="bench-" + uuid.uuid4().hex)
        self.run = uuid.uuid4().hex[:6]
        self._tokens: dict[str, str] = {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")},
            "CAMPANA_DATABASE_URL": POSTGRES_URL,
            "CAMPANA_REDIS_URL": REDIS_URL,
            "CAMPANA_JWT_SECRET": self.settings.jwt_secret or "",
            "CAMPANA_DATA_DIR": tempfile.mkdtemp(prefix="campana-bench-"),
        }

    def prepare(self) -> None:
        migrate = [sys.executable, "-m", "campana.cli", "migrate"]
        subprocess.run(migrate, env=self.env, check=True, capture_output=True)

    def command(self, port: int) -> list[str]:
        serve = [sys.executable, "-m", "campana.cli", "serve", "--log-level", "warning"]
        return [*serve, "--port", str(port)]

    def tab_url(self, port: int, user: str) -> str:
        # Tokens are minted once per user, so that minting is not timed in the storm.
        token = self._tokens.get(user)
        if token is None:
            token = self._mint(self.settings, f"{self.run}-{user}", ttl_seconds=TOKEN_TTL)
            self._tokens[user] = token
        return f"ws://127.0.0.1:{port}/api/v1/notifications/ws?token={token}"

    @contextlib.asynccontextmanager
    async def producer(self, port: int) -> AsyncIterator[Producer]:
        token = self._mint(self.settings, "bench-producer", scopes=(self._send_scope,))
        run = self.run
        headers = {"Authorization": f"Bearer {token}"}
        async with HttpPool("127.0.0.1", port, PRODUCERS, headers) as pool:

            class RestProducer:
                async def create(self, user_ids: list[str], message: str) -> None:
                    body = {
                        "user_ids": [f"{run}-{u}" for u in user_ids],
                        "type": "GENERIC_INFO",
                        "message": message,
                    }
                    status, answer = await pool.post("/api/v1/notifications/", orjson.dumps(body))
                    if status != 201:
                        raise RuntimeError(f"create answered {status}: {answer[:200]!r}")

            yield RestProducer()


class Alternative:
    """python-socketio + its Redis manager + FastAPI + SQLAlchemy (bench/alternative.py)."""

    name = "socketio"
    scales_out = True

    def __init__(self) -> None:
        self.secret = "bench-" + uuid.uuid4().hex
        self.run = uuid.uuid4().hex[:6]
        self._tokens: dict[str, str] = {}
        self.env = {
            **os.environ,
            "CAMPANA_BENCH_POSTGRES_URL": POSTGRES_URL,
            "CAMPANA_BENCH_REDIS_URL": REDIS_URL,
            "CAMPANA_BENCH_SECRET": self.secret,
        }

    def prepare(self) -> None:
        pass  # the server creates its table at start

    def command(self, port: int) -> list[str]:
        return [sys.executable, ALTERNATIVE, str(port)]

    async def open_tab(self, dial: Dial[Tab], port: int, user: str) -> Tab:
        # Engine.IO v4 over a WebSocket: open packet, namespace connect with auth, events.
        tab = await dial(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
        await tab.recv()
        token = self._tokens.get(user)
        if token is None:
            token = jwt.encode({"sub": f"{self.run}-{user}"}, self.secret, algorithm="HS256")
            self._tokens[user] = token
        await tab.send("40" + orjson.dumps({"token": token}).decode())
        opened = 0
        while opened < 2:
            text = await tab.recv()
            if text == "2":
                await tab.send("3")
            elif isinstance(text, str) and text.startswith("42"):
                opened += 1
        return tab

    def decode(self, text: str) -> tuple[str, Any] | None:
        if not text.startswith("42"):
            return None
        event, payload = orjson.loads(text[2:])
        return event, payload

    @contextlib.asynccontextmanager
    async def producer(self, port: int) -> AsyncIterator[Producer]:
        run = self.run
        async with HttpPool("127.0.0.1", port, PRODUCERS, {}) as pool:

            class RestProducer:
                async def create(self, user_ids: list[str], message: str) -> None:
                    body = {"user_ids": [f"{run}-{u}" for u in user_ids], "message": message}
                    status, answer = await pool.post("/notifications", orjson.dumps(body))
                    if status != 201:
                        raise RuntimeError(f"create answered {status}: {answer[:200]!r}")

            yield RestProducer()


def make_system(name: str) -> System:
    systems: dict[str, Callable[[], System]] = {
        "ceiling": Ceiling,
        "socketio": Alternative,
        "campana": Campana,
    }
    return systems[name]()


@dataclass
class Receipts:
    """What every tab received: frame counts, and when each marked notification arrived."""

    system: System
    frames: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    arrivals: dict[str, int] = field(default_factory=dict)
    last_arrival: dict[str, float] = field(default_factory=dict)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def follow(self, tabs: list[ClientConnection]) -> None:
        # Read from the start: Engine.IO drops a client that misses its pings.
        self.readers += [asyncio.create_task(self.read(tab)) for tab in tabs]

    async def drain(self, patience: float) -> None:
        """Wait for the readers to see their sockets close, then stop the rest."""
        if self.readers:
            await asyncio.wait(self.readers, timeout=patience)
        self.stop()

    def stop(self) -> None:
        for reader in self.readers:
            reader.cancel()
        self.readers.clear()

    async def read(self, connection: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in connection:
                text = raw if isinstance(raw, str) else raw.decode()
                if text == "2":  # Engine.IO ping
                    await connection.send("3")
                    continue
                if '"keepalive"' in text:
                    continue  # the ceiling sends none: count only what all send
                if '"notification.created"' not in text:
                    self.frames += self.system.decode(text) is not None
                    continue
                self.frames += 1
                decoded = self.system.decode(text)
                if decoded is None:
                    continue
                marker = decoded[1]["message"]
                now = time.perf_counter()
                started = self.sent_at.get(marker)
                if started is not None:
                    self.latencies.append(now - started)
                self.arrivals[marker] = self.arrivals.get(marker, 0) + 1
                self.last_arrival[marker] = now


@dataclass
class Usage:
    system: str
    step: str
    seconds: float
    server_cpu: float
    generator_cpu: float
    machine_cpu: float


@dataclass
class Report:
    """Every figure by system and metric, and what the tables need to tell about them."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    stand_ins: set[tuple[str, str]] = field(default_factory=set)
    usage: list[Usage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, system: str, metric: str, value: float, *, sum_up: bool = False) -> None:
        """Record a figure; ``sum_up`` adds to what the metric already holds."""
        figures = self.figures.setdefault(system, {})
        figures[metric] = figures.get(metric, 0.0) + value if sum_up else value

    def stand_in(self, system: str, metric: str, source: str) -> None:
        """A figure the system cannot produce, shown with the one it stands for."""
        self.add(system, metric, self.figures[system][source])
        self.stand_ins.add((system, metric))


@contextlib.asynccontextmanager
async def step(
    report: Report,
    system: System,
    name: str,
    servers: Sequence[Server],
    profiler: Profiler | None,
) -> AsyncIterator[None]:
    """One measured step: CPU used by the servers and the generator, and a profile."""
    async with contextlib.AsyncExitStack() as stack:
        if profiler is not None and system.name == "campana":
            for label, server in zip("ab", servers, strict=False):
                suffix = f"-{label}" if len(servers) > 1 else ""
                profile = profiler.record(f"{system.name}-{name}{suffix}", server.pid)
                await stack.enter_async_context(profile)
        server_cpu = sum(cpu_seconds(server.pid) for server in servers)
        generator_cpu = time.process_time()
        machine_cpu = machine_cpu_seconds()
        started = time.perf_counter()
        yield
        report.usage.append(
            Usage(
                system.name,
                name,
                time.perf_counter() - started,
                sum(cpu_seconds(server.pid) for server in servers) - server_cpu,
                time.process_time() - generator_cpu,
                machine_cpu_seconds() - machine_cpu,
            )
        )


async def open_tabs(
    system: System, port: int, users: list[str], receipts: Receipts, report: Report
) -> list[ClientConnection]:
    """Open tabs 250 at a time, each batch read from as soon as it is open.

    Reading at once matters: Engine.IO closes a tab that leaves its pings unanswered
    while thousands more are opening. A tab that fails to open is counted, not fatal.
    """
    tabs: list[ClientConnection] = []
    failures: Counter[str] = Counter()
    for start in range(0, len(users), 250):
        batch = users[start : start + 250]
        opened = await asyncio.gather(
            *(system.open_tab(dial_websockets, port, u) for u in batch), return_exceptions=True
        )
        good = [tab for tab in opened if not isinstance(tab, BaseException)]
        failures.update(repr(tab)[:80] for tab in opened if isinstance(tab, BaseException))
        receipts.follow(good)
        tabs += good
    report.add(system.name, "tabs that failed to open: failed", sum(failures.values()), sum_up=True)
    if failures:
        print(f"{system.name}: tabs that failed to open: {dict(failures)}", file=sys.stderr)
    return tabs


async def fixed_rate(
    producer: Producer, receipts: Receipts, users: list[str], rate: float, seconds: float
) -> dict[str, float]:
    receipts.latencies.clear()
    frames_before = receipts.frames
    calls = []
    total = int(rate * seconds)
    begin = time.perf_counter()
    for i in range(total):
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        marker = f"r{i}-{uuid.uuid4().hex[:8]}"
        receipts.sent_at[marker] = time.perf_counter()
        calls.append(asyncio.create_task(producer.create([random.choice(users)], marker)))
    await asyncio.gather(*calls)
    await settle(receipts, total)
    elapsed = time.perf_counter() - begin
    lat = receipts.latencies or [math.nan]
    return {
        "frames_per_s": (receipts.frames - frames_before) / elapsed,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000,
        "lost": total - len(receipts.latencies),
    }


async def as_fast_as_possible(
    producer: Producer, receipts: Receipts, users: list[str], seconds: float
) -> float:
    frames_before = receipts.frames
    stop = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            await producer.create([random.choice(users)], f"f{worker}-{i}")
            i += 1

    begin = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(PRODUCERS)))
    await asyncio.sleep(1.0)
    return (receipts.frames - frames_before) / (time.perf_counter() - begin)


async def broadcast(producer: Producer, receipts: Receipts, users: list[str]) -> float:
    marker = f"b-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    receipts.sent_at[marker] = started
    await producer.create(users, marker)
    deadline = time.monotonic() + 120
    while receipts.arrivals.get(marker, 0) < len(users) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return receipts.last_arrival.get(marker, math.nan) - started


async def settle(receipts: Receipts, expected: int) -> None:
    deadline = time.monotonic() + 30
    while len(receipts.latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def fan_out(
    report: Report,
    system: System,
    servers: Sequence[Server],
    receipts: Receipts,
    users: list[str],
    args: argparse.Namespace,
    profiler: Profiler | None,
    cross: bool = False,
) -> None:
    """Scenario 2, or 5 with ``cross``: producers call the first server only."""
    steps, metrics = ("cross-", CROSS) if cross else ("", "")
    async with system.producer(servers[0].port) as producer:
        async with step(report, system, f"{steps}fanout", servers, profiler):
            fixed = await fixed_rate(producer, receipts, users, args.rate, args.seconds)
        for key, value in fixed.items():
            report.add(system.name, f"{metrics}fan-out at {args.rate:g}/s: {key}", value)
        async with step(report, system, f"{steps}fastest", servers, profiler):
            fastest = await as_fast_as_possible(producer, receipts, users, args.seconds)
        report.add(system.name, f"{metrics}fan-out, fastest: frames/s", fastest)


async def measure_one_instance(
    system: System,
    scenarios: set[str],
    args: argparse.Namespace,
    report: Report,
    profiler: Profiler | None,
    logs: Path,
) -> None:
    """Scenarios 1 to 4 on one server process, in order, the same tabs throughout."""
    users = [f"u{i}" for i in range(max(args.sizes))]
    port = free_port()
    server = Server(system.command(port), port, system.env, logs / f"{system.name}.log")
    await server.start()
    receipts = Receipts(system)
    tabs: list[ClientConnection] = []
    try:
        await asyncio.sleep(1.0)
        if "memory" in scenarios:
            base = rss_bytes(server.pid)
            async with step(report, system, "memory", [server], profiler):
                for size in args.sizes:
                    tabs += await open_tabs(system, port, users[len(tabs) : size], receipts, report)
                    await asyncio.sleep(1.0)
                    per_socket = (rss_bytes(server.pid) - base) / size / 1024
                    report.add(system.name, f"memory per socket at {size} (KiB)", per_socket)
        else:
            tabs = await open_tabs(system, port, users, receipts, report)
        if "fanout" in scenarios:
            await fan_out(report, system, [server], receipts, users, args, profiler)
        if "broadcast" in scenarios:
            async with system.producer(port) as producer:
                async with step(report, system, "broadcast", [server], profiler):
                    seconds = await broadcast(producer, receipts, users)
                report.add(system.name, f"broadcast to {len(users)}: seconds", seconds)
        if "storm" in scenarios:
            await storm(system, server, receipts, tabs, users, args, report, profiler)
    finally:
        await server.stop()
        receipts.stop()
        await asyncio.gather(*(tab.close() for tab in tabs))


async def storm(
    system: System,
    server: Server,
    receipts: Receipts,
    tabs: list[ClientConnection],
    users: list[str],
    args: argparse.Namespace,
    report: Report,
    profiler: Profiler | None,
) -> None:
    """Scenario 4: restart the server under its tabs, then every tab reconnects.

    The clock starts when the reconnects do, once the new process listens: the restart
    itself (a graceful close of every socket for Campana) is reported, not timed.
    """
    stopping = time.perf_counter()
    graceful = await server.stop()
    stopped = time.perf_counter() - stopping
    await receipts.drain(patience=10)
    closes = Counter(tab.close_code for tab in tabs)
    starting = time.perf_counter()
    await server.start()
    started = time.perf_counter() - starting

    in_flight = min(args.storm_in_flight or len(users), len(users))
    gate = asyncio.Semaphore(in_flight)
    dialed: list[BareWebSocket] = []
    finished: list[float] = []
    failures: Counter[str] = Counter()

    async def dial(url: str) -> BareWebSocket:
        socket = await BareWebSocket.connect(url)
        dialed.append(socket)
        return socket

    async def reconnect(user: str, deadline: float) -> None:
        try:
            async with gate, asyncio.timeout_at(deadline):
                await system.open_tab(dial, server.port, user)
            finished.append(time.perf_counter())
        except TimeoutError:
            failures[f"no opening frames within {STORM_PATIENCE:g} s"] += 1
        except Exception as error:  # any failure of one tab is that tab's failure
            failures[f"{type(error).__name__}: {error}"[:120]] += 1

    counters = tcp_counters()
    async with step(report, system, "storm", [server], profiler):
        begin = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + STORM_PATIENCE
        await asyncio.gather(*(reconnect(user, deadline) for user in users))
    kernel = {k: v - counters[k] for k, v in tcp_counters().items() if k in KERNEL_SIGNS}
    for socket in dialed:
        socket.close()

    seconds = max(finished) - begin if finished else math.nan
    metric = f"reconnect storm after restart, {len(users)} tabs"
    report.add(system.name, f"{metric}: seconds", seconds)
    report.add(system.name, f"{metric}: failed", sum(failures.values()))
    median = statistics.median(finished) - begin if finished else math.nan
    closed_with = ", ".join(f"{code}: {n}" for code, n in closes.most_common())
    failed = "; ".join(f"{n}x {why}" for why, n in failures.most_common(5)) or "none"
    report.notes.append(
        f"{system.name} storm: restart {stopped:.1f} s to exit"
        f"{'' if graceful else ' (killed after 60 s)'} and {started:.1f} s to listen; old "
        f"tabs closed with {{{closed_with}}}; {len(users)} reconnects, at most {in_flight} "
        f"in flight; half had their frames at {median:.1f} s, all at {seconds:.1f} s; "
        f"kernel: {', '.join(f'{k} {v}' for k, v in kernel.items())}; failures: {failed}"
    )


async def measure_two_instances(
    system: System,
    args: argparse.Namespace,
    report: Report,
    profiler: Profiler | None,
    logs: Path,
) -> None:
    """Scenario 5: two processes, tabs split evenly, producers on the first only."""
    servers = []
    for label in "ab":
        port = free_port()
        log = logs / f"{system.name}-{label}.log"
        servers.append(Server(system.command(port), port, system.env, log))
    receipts = Receipts(system)
    tabs: list[ClientConnection] = []
    users = [f"u{i}" for i in range(max(args.sizes))]
    try:
        for server in servers:  # one after the other: the alternative creates its table
            await server.start()
        for server, half in zip(servers, (users[0::2], users[1::2]), strict=True):
            tabs += await open_tabs(system, server.port, half, receipts, report)
        await fan_out(report, system, servers, receipts, users, args, profiler, cross=True)
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
        receipts.stop()
        await asyncio.gather(*(tab.close() for tab in tabs))


def format_value(metric: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if metric.endswith((": lost", ": failed")):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def table(report: Report) -> str:
    """Figures per system, then Campana's ratio to each other system measured."""
    names = [name for name in SYSTEMS if name in report.figures]
    others = [n for n in ("ceiling", "socketio") if n in names] if "campana" in names else []
    metrics = list(dict.fromkeys(m for name in names for m in report.figures[name]))
    header = ["metric", *names, *(f"campana ÷ {other}" for other in others)]
    rows = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for metric in metrics:
        values = {n: report.figures[n].get(metric, math.nan) for n in names}
        cells = [
            format_value(metric, values[n]) + (" †" if (n, metric) in report.stand_ins else "")
            for n in names
        ]
        for other in others:
            ratio = values["campana"] / values[other] if values[other] else math.nan
            cells.append("-" if math.isnan(ratio) else f"{ratio:.2f}x")
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    if report.stand_ins:
        rows += [
            "",
            "† One process: the ceiling shares nothing between processes, so its cross-instance "
            "cells repeat its one-instance fan-out (scenario 2), the best one process does.",
        ]
    return "\n".join(rows)


def usage_table(report: Report) -> str:
    """CPU per step, in seconds and as a share of one core.

    A generator near 100% means the step timed the generator; "rest" is PostgreSQL, Redis
    and anything else running on the machine, which should be nothing else.
    """
    rows = [
        "| system | step | seconds | server CPU | generator CPU | rest of the machine |",
        "|---|---|---|---|---|---|",
    ]
    for u in report.usage:
        rest = u.machine_cpu - u.server_cpu - u.generator_cpu
        cells = [
            f"{cpu:.1f} s ({cpu / u.seconds:.0%})" for cpu in (u.server_cpu, u.generator_cpu, rest)
        ]
        rows.append(f"| {u.system} | {u.step} | {u.seconds:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    gc.disable()  # the generator's own collections would read as server latency
    report = Report()
    profiler = Profiler(args.profile) if args.profile else None
    logs = Path(tempfile.mkdtemp(prefix="campana-bench-logs-"))
    print(f"server logs in {logs}", file=sys.stderr)
    for name in args.systems:
        system = make_system(name)
        scenarios = set(args.scenarios)
        cross = "cross" in scenarios and system.scales_out
        if "cross" in scenarios and not system.scales_out:
            scenarios.add("fanout")  # its one-process fan-out stands in for scenario 5
        scenarios.discard("cross")
        await ensure_database(fresh=True)
        system.prepare()
        if scenarios:
            chosen = ", ".join(s for s in SCENARIOS if s in scenarios)
            print(f"measuring {name}: {chosen}…", file=sys.stderr)
            await measure_one_instance(system, scenarios, args, report, profiler, logs)
        if cross:
            print(f"measuring {name}: two instances…", file=sys.stderr)
            await ensure_database(fresh=True)
            system.prepare()
            await measure_two_instances(system, args, report, profiler, logs)
        elif "cross" in args.scenarios:
            for metric in list(report.figures[name]):
                if metric.startswith("fan-out"):
                    report.stand_in(name, CROSS + metric, metric)
        gc.collect()  # between systems, where no one is timing
    if "fanout" in args.scenarios:
        report.notes.append(await commit_floor(args.rate))
    print(table(report))
    print("\nCPU during each step (share of one core; the machine has two):\n")
    print(usage_table(report))
    if report.notes:
        print("\n" + "\n".join(f"- {note}" for note in report.notes))
    if profiler is not None:
        print(f"\nProfiles of Campana's processes: {args.profile}/*-summary.txt")


async def commit_floor(rate: float, commits: int = 2000) -> str:
    """The latency of a durable write on this PostgreSQL, the floor of any create-to-receipt.

    One-row INSERT and COMMIT, one after another at ``rate`` per second at most, on the
    same database and with the same ``synchronous_commit`` as the systems: a create
    stored before it is announced can reach no socket sooner.
    """
    import asyncpg

    await ensure_database(fresh=True)
    connection = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await connection.execute("CREATE TABLE floor (id uuid PRIMARY KEY, at timestamptz)")
        latencies: list[float] = []
        begin = time.perf_counter()
        for i in range(commits):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            started = time.perf_counter()
            async with connection.transaction():
                await connection.execute("INSERT INTO floor VALUES ($1, now())", uuid.uuid4())
            latencies.append(time.perf_counter() - started)
    finally:
        await connection.close()
    return (
        f"PostgreSQL alone, one-row INSERT + COMMIT at {rate:g}/s ({commits} commits): "
        f"p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
    )


def name_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        chosen = [v.strip() for v in value.split(",") if v.strip()]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return [name for name in allowed if name in chosen]  # the canonical order

    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 5000, 10000]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--systems", type=name_list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--scenarios", type=name_list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument(
        "--storm-in-flight",
        type=int,
        default=STORM_IN_FLIGHT,
        help="handshakes open at once in the storm; 0: every tab at the same instant",
    )
    parser.add_argument("--profile", type=Path, help="py-spy Campana's processes into DIR")
    asyncio.run(main(parser.parse_args()))
