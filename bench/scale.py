"""Scale-out figures: memory per socket, and create-to-receipt latency across instances.

Runs, in one command, against the local PostgreSQL and Redis:

* a baseline: ``bench/ceiling.py``, a bare ``websockets`` server that holds the same number
  of sockets and sends each the same opening frames (no auth, no database, no broker);
* two ``campana serve`` instances sharing PostgreSQL and Redis, holding the same number of
  authenticated sockets (one user each, half on each instance).

Then it creates notifications through instance A at a fixed rate, for users whose socket
is on instance B (cross-instance) and on A (same instance), and reports latency from the
start of the create call to the frame's arrival. Usage::

    .venv/bin/python bench/scale.py --sockets 4000 --rate 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from common import (
    POSTGRES_URL,
    HttpPool,
    ensure_database,
    free_port,
    percentile,
    process,
    rss_bytes,
    wait_for_port,
)
from websockets.asyncio.client import ClientConnection, connect

from campana.auth import SEND_SCOPE, mint_token
from campana.settings import Settings

REDIS_URL = os.environ.get("CAMPANA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-" + uuid.uuid4().hex

CEILING = str(Path(__file__).with_name("ceiling.py"))


async def open_sockets(urls: list[str], first_frames: int) -> list[ClientConnection]:
    """Open every socket, 200 at a time, and read its opening frames."""
    opened: list[ClientConnection] = []
    for start in range(0, len(urls), 200):
        batch = await asyncio.gather(
            *(
                connect(url, compression=None, max_size=None, ping_interval=None)
                for url in urls[start : start + 200]
            )
        )
        for connection in batch:
            for _ in range(first_frames):
                await connection.recv()
        opened.extend(batch)
    return opened


async def measure_memory(pid: int, urls: list[str], first_frames: int) -> tuple[float, list[Any]]:
    await asyncio.sleep(0.5)
    before = rss_bytes(pid)
    sockets = await open_sockets(urls, first_frames)
    await asyncio.sleep(1.0)
    after = rss_bytes(pid)
    return (after - before) / len(urls), sockets


async def latency_run(
    producer: HttpPool, tabs: dict[str, ClientConnection], rate: float, seconds: float
) -> list[float]:
    """Create for random users at a fixed rate; seconds from call start to frame receipt."""
    started: dict[str, float] = {}
    latencies: list[float] = []
    users = list(tabs)

    async def listen(user: str, connection: ClientConnection) -> None:
        while True:
            frame = orjson.loads(await connection.recv())
            if frame["event"] == "notification.created":
                marker = frame["payload"]["message"]
                if marker in started:
                    latencies.append(time.perf_counter() - started.pop(marker))

    listeners = [asyncio.create_task(listen(u, c)) for u, c in tabs.items()]
    calls: list[asyncio.Task[tuple[int, bytes]]] = []
    total = int(rate * seconds)
    begin = time.perf_counter()
    for i in range(total):
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        marker = f"bench-{i}-{uuid.uuid4().hex[:6]}"
        started[marker] = time.perf_counter()
        body = {"user_id": random.choice(users), "type": "GENERIC_INFO", "message": marker}
        calls.append(
            asyncio.create_task(producer.post("/api/v1/notifications/", orjson.dumps(body)))
        )
    refused = [status for status, _ in await asyncio.gather(*calls) if status != 201]
    if refused:
        raise RuntimeError(f"{len(refused)} creates failed, e.g. with status {refused[0]}")
    deadline = time.monotonic() + 10
    while started and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for listener in listeners:
        listener.cancel()
    if started:
        print(f"  {len(started)} of {total} notifications never arrived", file=sys.stderr)
    return latencies


async def closing_code(connection: ClientConnection) -> int | None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.wait_for(connection.recv(), 30)
    return connection.close_code


def describe(values: list[float]) -> str:
    p50, p99, top = (
        1000 * v for v in (statistics.median(values), percentile(values, 0.99), max(values))
    )
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {top:6.1f} ms  ({len(values)} frames)"


async def main(args: argparse.Namespace) -> None:
    # The load generator holds every client socket: its own garbage collections (pauses of
    # up to a second with 10,000 connections) would be measured as the server's latency.
    gc.disable()
    await ensure_database()
    settings = Settings(jwt_secret=SECRET)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")},
        "CAMPANA_DATABASE_URL": POSTGRES_URL,
        "CAMPANA_REDIS_URL": REDIS_URL,
        "CAMPANA_JWT_SECRET": SECRET,
        "CAMPANA_DATA_DIR": tempfile.mkdtemp(prefix="campana-bench-"),
        "CAMPANA_DATABASE_POOL_SIZE": "10",
    }
    subprocess.run([sys.executable, "-m", "campana.cli", "migrate"], env=env, check=True)
    half = args.sockets // 2
    run = uuid.uuid4().hex[:6]

    baseline_port = free_port()
    with process([sys.executable, CEILING, str(baseline_port)]) as pid:
        await wait_for_port(baseline_port)
        urls = [f"ws://127.0.0.1:{baseline_port}/?user=u{i}" for i in range(half)]
        baseline_per_socket, sockets = await measure_memory(pid, urls, 2)
        await asyncio.gather(*(s.close() for s in sockets))

    port_a, port_b = free_port(), free_port()
    serve = [sys.executable, "-m", "campana.cli", "serve", "--log-level", "warning", "--port"]
    with process([*serve, str(port_a)], env) as pid_a, process([*serve, str(port_b)], env) as pid_b:
        await wait_for_port(port_a)
        await wait_for_port(port_b)

        def urls_for(port: int, users: list[str]) -> list[str]:
            return [
                f"ws://127.0.0.1:{port}/api/v1/notifications/ws?token="
                + mint_token(settings, user, ttl_seconds=3600)
                for user in users
            ]

        users_b = [f"bench-{run}-b{i}" for i in range(half)]
        users_a = [f"bench-{run}-a{i}" for i in range(half)]
        per_socket_b, sockets_b = await measure_memory(pid_b, urls_for(port_b, users_b), 2)
        per_socket_a, sockets_a = await measure_memory(pid_a, urls_for(port_a, users_a), 2)
        campana_per_socket = (per_socket_a + per_socket_b) / 2

        producer_token = mint_token(settings, "bench-producer", scopes=(SEND_SCOPE,))
        headers = {"Authorization": f"Bearer {producer_token}"}
        async with HttpPool("127.0.0.1", port_a, 50, headers) as producer:
            sample = args.listeners
            # Warm-up: connection pools, first queries, Python's own caches.
            await latency_run(
                producer, dict(zip(users_b[:50], sockets_b[:50], strict=True)), args.rate, 1.0
            )
            same = await latency_run(
                producer,
                dict(zip(users_a[:sample], sockets_a[:sample], strict=True)),
                args.rate,
                args.seconds,
            )
            cross = await latency_run(
                producer,
                dict(zip(users_b[:sample], sockets_b[:sample], strict=True)),
                args.rate,
                args.seconds,
            )
        # Graceful stop: SIGTERM to instance B, time until each of its sockets has its 1012.
        stopping = time.perf_counter()
        os.kill(pid_b, signal.SIGTERM)
        codes = await asyncio.gather(*(closing_code(s) for s in sockets_b))
        shutdown_seconds = time.perf_counter() - stopping
        await asyncio.gather(*(s.close() for s in sockets_a))

    print(f"\nsockets held: {args.sockets} ({half} per process, one user each)")
    print(f"memory per socket, baseline websockets server: {baseline_per_socket / 1024:6.1f} KiB")
    print(
        f"memory per socket, campana (auth, snapshot, Redis): {campana_per_socket / 1024:6.1f} KiB"
        f"  ratio {campana_per_socket / baseline_per_socket:.2f}x"
    )
    print(f"\ncreate-to-receipt at {args.rate:g}/s for {args.seconds:g}s, {half} sockets each:")
    print(f"  same instance:  {describe(same)}")
    print(f"  cross instance: {describe(cross)}")
    ratio = percentile(cross, 0.99) / percentile(same, 0.99)
    print(f"  cross/same p99 ratio {ratio:.2f}x")
    closed = sum(code == 1012 for code in codes)
    print(
        f"\nSIGTERM with {half} sockets: {closed} closed with 1012 "
        f"in {shutdown_seconds:.2f} s (others: {len(codes) - closed})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=200.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--listeners", type=int, default=500, help="sockets that receive")
    asyncio.run(main(parser.parse_args()))
