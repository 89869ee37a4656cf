"""Campana against the ceiling, side by side, with one load generator, in one command.

Scenarios (each system in turn, same machine, same generator):

1. idle sockets: RSS growth per open socket, after its opening frames, at each size;
2. fan-out: notifications at a fixed rate to random users, then as fast as the producers
   can: delivered frames per second, create-to-receipt latency p50/p99/max;
3. broadcast: one producer call naming every user: time until the last socket has it.

Systems: ``ceiling`` (bench/ceiling.py: ``websockets`` alone) and ``campana`` (one
``campana serve`` on the local PostgreSQL and Redis). Usage::

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

import orjson
from common import HttpPool, free_port, percentile, process, rss_bytes, wait_for_port
from websockets.asyncio.client import ClientConnection, connect

from campana.auth import SEND_SCOPE, mint_token
from campana.settings import Settings

POSTGRES_URL = os.environ.get("CAMPANA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("CAMPANA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CEILING = str(Path(__file__).with_name("ceiling.py"))
PRODUCERS = 32


class Producer(Protocol):
    async def create(self, user_ids: list[str], message: str) -> None: ...


class System(Protocol):
    name: str

    def start(self) -> contextlib.AbstractContextManager[int]: ...
    def tab_url(self, user: str) -> str: ...
    def producer(self) -> contextlib.AbstractAsyncContextManager[Producer]: ...


class Ceiling:
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


class Campana:
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


@dataclass
class Receipts:
    """What every tab received: frame counts, and when each marked notification arrived."""

    frames: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    arrivals: dict[str, int] = field(default_factory=dict)
    last_arrival: dict[str, float] = field(default_factory=dict)

    async def read(self, connection: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in connection:
                text = raw if isinstance(raw, str) else raw.decode()
                if '"keepalive"' in text:
                    continue  # the ceiling sends none: count only what both send
                self.frames += 1
                if '"notification.created"' not in text:
                    continue
                marker = orjson.loads(text)["payload"]["message"]
                now = time.perf_counter()
                started = self.sent_at.get(marker)
                if started is not None:
                    self.latencies.append(now - started)
                self.arrivals[marker] = self.arrivals.get(marker, 0) + 1
                self.last_arrival[marker] = now


async def open_tabs(system: System, users: list[str]) -> list[ClientConnection]:
    tabs: list[ClientConnection] = []
    for start in range(0, len(users), 250):
        batch = await asyncio.gather(
            *(
                connect(system.tab_url(u), compression=None, max_size=None, ping_interval=None)
                for u in users[start : start + 250]
            )
        )
        for tab in batch:
            await tab.recv()
            await tab.recv()
        tabs.extend(batch)
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
        await wait_for_port(system.port)  # type: ignore[attr-defined]
        receipts = Receipts()
        base = rss_bytes(pid)
        tabs: list[ClientConnection] = []
        for size in args.sizes:
            tabs += await open_tabs(system, users[len(tabs) : size])
            await asyncio.sleep(1.0)
            results[f"memory per socket at {size} (KiB)"] = (rss_bytes(pid) - base) / size / 1024
        readers = [asyncio.create_task(receipts.read(tab)) for tab in tabs]
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
        for tab in tabs:
            await tab.close()
        for reader in readers:
            reader.cancel()
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    rows = [
        f"| metric | {' | '.join(names)} | campana ÷ ceiling |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for metric in results[names[0]]:
        values = [results[n].get(metric, float("nan")) for n in names]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        rows.append(
            f"| {metric} | " + " | ".join(f"{v:,.1f}" for v in values) + f" | {ratio:.2f}x |"
        )
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    gc.disable()  # the generator's own collections would read as server latency
    results: dict[str, dict[str, float]] = {}
    for system in (Ceiling(), Campana()):
        print(f"measuring {system.name}…", file=sys.stderr)
        results[system.name] = await measure(system, args)  # type: ignore[arg-type]
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 5000, 10000]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
