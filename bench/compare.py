"""Campana against the ceiling, side by side, with one load generator, in one command.

Scenarios (each system in turn, same machine, same generator):

1. idle sockets: RSS growth per open socket, after its opening frames, at each size;
2. fan-out: notifications at a fixed rate to random users, then as fast as the producers
   can: delivered frames per second, create-to-receipt latency p50/p99/max;
3. broadcast: one producer call naming every user: time until the last socket has it;
4. reconnect storm: every socket connects at once: time until all have their snapshot.

Systems: ``ceiling`` (bench/ceiling.py: ``websockets`` alone), ``socketio`` (the usual
alternative, bench/alternative.py: python-socketio with its Redis manager, FastAPI and
SQLAlchemy) and ``campana`` (one ``campana serve``), the last two on the local PostgreSQL
and Redis. Usage::

    .venv/bin/python bench/compare.py --sizes 1000,5000,10000 --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import orjson
from common import HttpPool, free_port, percentile, process, rss_bytes, wait_for_port
from websockets.asyncio.client import ClientConnection, connect

from campana.auth import SEND_SCOPE, mint_token
from campana.settings import Settings

POSTGRES_URL = os.environ.get("CAMPANA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("CAMPANA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CEILING = str(Path(__file__).with_name("ceiling.py"))
ALTERNATIVE = str(Path(__file__).with_name("alternative.py"))
PRODUCERS = 32
# No client pings (the generator's own), and patience: a storm of 10,000 connects on two
# cores takes longer than the library's 10 s default.
CLIENT: dict[str, Any] = {
    "compression": None,
    "max_size": None,
    "ping_interval": None,
    "open_timeout": 300,
}


class Producer(Protocol):
    async def create(self, user_ids: list[str], message: str) -> None: ...


class System(Protocol):
    name: str
    port: int

    def start(self) -> contextlib.AbstractContextManager[int]: ...
    async def open_tab(self, user: str) -> ClientConnection: ...
    def decode(self, text: str) -> tuple[str, Any] | None: ...
    def producer(self) -> contextlib.AbstractAsyncContextManager[Producer]: ...


class PlainFrames:
    """Campana's wire format: ``{"event", "payload"}`` text frames, two to open."""

    def tab_url(self, user: str) -> str:
        raise NotImplementedError

    async def open_tab(self, user: str) -> ClientConnection:
        tab = await connect(self.tab_url(user), **CLIENT)
        await tab.recv()
        await tab.recv()
        return tab

    def decode(self, text: str) -> tuple[str, Any] | None:
        frame = orjson.loads(text)
        return frame["event"], frame["payload"]


class Ceiling(PlainFrames):
    name = "ceiling"

    def __init__(self) -> None:
        self.port = free_port()

    @contextlib.contextmanager
    def start(self) -> Iterator[int]:
        with process([sys.executable, CEILING, str(self.port)]) as pid:
            yield pid

    def tab_url(self, user: str) -> str:
        return f"ws://127.0.0.1:{self.port}/?user={user}"

    @contextlib.asynccontextmanager
    async def producer(self) -> Any:
        connections = [
            await connect(f"ws://127.0.0.1:{self.port}/produce", compression=None, max_size=None)
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

    def __init__(self) -> None:
        self.port = free_port()
        self.settings = Settings(jwt_secret="bench-" + uuid.uuid4().hex)
        self.run = uuid.uuid4().hex[:6]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")},
            "CAMPANA_DATABASE_URL": POSTGRES_URL,
            "CAMPANA_REDIS_URL": REDIS_URL,
            "CAMPANA_JWT_SECRET": self.settings.jwt_secret or "",
            "CAMPANA_DATA_DIR": tempfile.mkdtemp(prefix="campana-bench-"),
        }

    @contextlib.contextmanager
    def start(self) -> Iterator[int]:
        subprocess.run(
            [sys.executable, "-m", "campana.cli", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        serve = [sys.executable, "-m", "campana.cli", "serve", "--log-level", "warning"]
        with process([*serve, "--port", str(self.port)], self.env) as pid:
            yield pid

    def tab_url(self, user: str) -> str:
        token = mint_token(self.settings, f"{self.run}-{user}", ttl_seconds=3600)
        return f"ws://127.0.0.1:{self.port}/api/v1/notifications/ws?token={token}"

    @contextlib.asynccontextmanager
    async def producer(self) -> Any:
        token = mint_token(self.settings, "bench-producer", scopes=(SEND_SCOPE,))
        run = self.run
        headers = {"Authorization": f"Bearer {token}"}
        async with HttpPool("127.0.0.1", self.port, PRODUCERS, headers) as pool:

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

    def __init__(self) -> None:
        self.port = free_port()
        self.secret = "bench-" + uuid.uuid4().hex
        self.run = uuid.uuid4().hex[:6]

    @contextlib.contextmanager
    def start(self) -> Iterator[int]:
        env = {
            **os.environ,
            "CAMPANA_BENCH_POSTGRES_URL": POSTGRES_URL,
            "CAMPANA_BENCH_REDIS_URL": REDIS_URL,
            "CAMPANA_BENCH_SECRET": self.secret,
        }
        with process([sys.executable, ALTERNATIVE, str(self.port)], env) as pid:
            yield pid

    async def open_tab(self, user: str) -> ClientConnection:
        # Engine.IO v4 over a WebSocket: open packet, namespace connect with auth, events.
        url = f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
        tab = await connect(url, **CLIENT)
        await tab.recv()
        token = jwt.encode({"sub": f"{self.run}-{user}"}, self.secret, algorithm="HS256")
        await tab.send("40" + orjson.dumps({"token": token}).decode())
        opened = 0
        while opened < 2:
            text = str(await tab.recv())
            if text == "2":
                await tab.send("3")
            elif text.startswith("42"):
                opened += 1
        return tab

    def decode(self, text: str) -> tuple[str, Any] | None:
        if not text.startswith("42"):
            return None
        event, payload = orjson.loads(text[2:])
        return event, payload

    @contextlib.asynccontextmanager
    async def producer(self) -> Any:
        run = self.run
        async with HttpPool("127.0.0.1", self.port, PRODUCERS, {}) as pool:

            class RestProducer:
                async def create(self, user_ids: list[str], message: str) -> None:
                    body = {"user_ids": [f"{run}-{u}" for u in user_ids], "message": message}
                    status, answer = await pool.post("/notifications", orjson.dumps(body))
                    if status != 201:
                        raise RuntimeError(f"create answered {status}: {answer[:200]!r}")

            yield RestProducer()


@dataclass
class Receipts:
    """What every tab received: frame counts, and when each marked notification arrived."""

    frames: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    arrivals: dict[str, int] = field(default_factory=dict)
    last_arrival: dict[str, float] = field(default_factory=dict)

    async def read(self, connection: ClientConnection, system: System) -> None:
        with contextlib.suppress(Exception):
            async for raw in connection:
                text = raw if isinstance(raw, str) else raw.decode()
                if text == "2":  # Engine.IO ping
                    await connection.send("3")
                    continue
                if '"keepalive"' in text:
                    continue  # the ceiling sends none: count only what all send
                if '"notification.created"' not in text:
                    self.frames += system.decode(text) is not None
                    continue
                self.frames += 1
                decoded = system.decode(text)
                if decoded is None:
                    continue
                marker = decoded[1]["message"]
                now = time.perf_counter()
                started = self.sent_at.get(marker)
                if started is not None:
                    self.latencies.append(now - started)
                self.arrivals[marker] = self.arrivals.get(marker, 0) + 1
                self.last_arrival[marker] = now


async def open_tabs(system: System, users: list[str]) -> list[ClientConnection]:
    tabs: list[ClientConnection] = []
    for start in range(0, len(users), 250):
        tabs += await asyncio.gather(*(system.open_tab(u) for u in users[start : start + 250]))
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
    lat = receipts.latencies
    return {
        "frames_per_s": (receipts.frames - frames_before) / elapsed,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000,
        "lost": total - len(lat),
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
    return receipts.last_arrival.get(marker, float("nan")) - started


async def settle(receipts: Receipts, expected: int) -> None:
    deadline = time.monotonic() + 30
    while len(receipts.latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measure(system: System, args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, float] = {}
    users = [f"u{i}" for i in range(max(args.sizes))]
    with system.start() as pid:
        await asyncio.sleep(2)
        await wait_for_port(system.port)
        receipts = Receipts()
        base = rss_bytes(pid)
        tabs: list[ClientConnection] = []
        readers: list[asyncio.Task[None]] = []
        for size in args.sizes:
            opened = await open_tabs(system, users[len(tabs) : size])
            # Read from the start: Engine.IO drops a client that misses its pings.
            readers += [asyncio.create_task(receipts.read(tab, system)) for tab in opened]
            tabs += opened
            await asyncio.sleep(1.0)
            results[f"memory per socket at {size} (KiB)"] = (rss_bytes(pid) - base) / size / 1024
        async with system.producer() as producer:
            fixed = await fixed_rate(producer, receipts, users, args.rate, args.seconds)
            for key, value in fixed.items():
                results[f"fan-out at {args.rate:g}/s: {key}"] = value
            results["fan-out, fastest: frames/s"] = await as_fast_as_possible(
                producer, receipts, users, args.seconds
            )
            results[f"broadcast to {len(users)}: seconds"] = await broadcast(
                producer, receipts, users
            )
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*(tab.close() for tab in tabs))
        await asyncio.sleep(2.0)
        results[f"reconnect storm, {len(tabs)} at once: seconds"] = await storm(system, users)
    return results


async def storm(system: System, users: list[str]) -> float:
    """Every socket connects at once, as after a restart: time until all have their snapshot.

    Connections are opened all together (no batching), each reading its opening frames.
    """
    started = time.perf_counter()
    tabs = await asyncio.gather(*(system.open_tab(u) for u in users), return_exceptions=True)
    elapsed = time.perf_counter() - started
    opened = [tab for tab in tabs if not isinstance(tab, BaseException)]
    await asyncio.gather(*(tab.close() for tab in opened))
    if len(opened) < len(users):
        print(f"  storm: {len(users) - len(opened)} sockets failed", file=sys.stderr)
    return elapsed


def table(results: dict[str, dict[str, float]]) -> str:
    """Figures per system, then Campana's ratios to the ceiling and to the alternative."""
    names = list(results)
    header = f"| metric | {' | '.join(names)} | campana ÷ ceiling | campana ÷ socketio |"
    rows = [header, "|---|" + "---|" * (len(names) + 2)]
    for metric in results["ceiling"]:
        values = {n: results[n].get(metric, float("nan")) for n in names}
        ratios = [
            values["campana"] / values[other] if values[other] else float("nan")
            for other in ("ceiling", "socketio")
        ]
        cells = " | ".join(f"{values[n]:,.1f}" for n in names)
        rows.append(f"| {metric} | {cells} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    gc.disable()  # the generator's own collections would read as server latency
    results: dict[str, dict[str, float]] = {}
    systems: list[System] = [Ceiling(), Alternative(), Campana()]
    for system in systems:
        print(f"measuring {system.name}…", file=sys.stderr)
        results[system.name] = await measure(system, args)
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 5000, 10000]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
