"""What the sweep costs: one `campana serve` holding idle tabs of many users, sweeping
often, against the same server not sweeping, in one command.

The sweep (hub.py) reads the version of every user with a socket on the process, in one
query, every ``CAMPANA_SWEEP_SECONDS``. This runs the server twice on PostgreSQL and
Redis with the same tabs: once with a sweep every ``--period`` seconds, once with none
(the baseline), and reports the server's CPU per sweep (the difference over the window,
divided by the sweeps), the query's duration (the server's own histogram) and the CPU
ratio of the two runs. Usage::

    .venv/bin/python bench/sweep.py --users 10000 --period 1 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

from common import BareWebSocket, Server, cpu_seconds, ensure_database, free_port
from compare import Campana

NO_SWEEP_SECONDS = 3600  # the baseline's period: no sweep within the window
OPEN_AT_ONCE = 250


async def open_tab(url: str) -> BareWebSocket:
    tab = await BareWebSocket.connect(url)
    await tab.recv()  # snapshot
    await tab.recv()  # unread count
    return tab


async def keep_reading(tab: BareWebSocket) -> None:
    """Read (and so answer pings) until the server goes."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            await tab.recv()


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def measure(period: float, users: int, seconds: float, logs: Path) -> dict[str, float]:
    system = Campana()
    system.env["CAMPANA_SWEEP_SECONDS"] = str(period)
    system.prepare()
    port = free_port()
    server = Server(system.command(port), port, system.env, logs / f"sweep-{period:g}.log")
    await server.start()
    tabs: list[BareWebSocket] = []
    readers: list[asyncio.Task[None]] = []
    try:
        names = [f"u{i}" for i in range(users)]
        for start in range(0, users, OPEN_AT_ONCE):
            batch = names[start : start + OPEN_AT_ONCE]
            opened = await asyncio.gather(*(open_tab(system.tab_url(port, u)) for u in batch))
            readers += [asyncio.create_task(keep_reading(tab)) for tab in opened]
            tabs += opened
        await asyncio.sleep(3.0)  # the opening's aftermath settles
        before = await scrape(port)
        cpu, began = cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, window = cpu_seconds(server.pid) - cpu, time.monotonic() - began
        after = await scrape(port)
    finally:
        for reader in readers:
            reader.cancel()
        for tab in tabs:
            tab.close()
        await server.stop()
    sweeps = metric(after, "campana_sweep_duration_seconds_count") - metric(
        before, "campana_sweep_duration_seconds_count"
    )
    query = metric(after, "campana_sweep_duration_seconds_sum") - metric(
        before, "campana_sweep_duration_seconds_sum"
    )
    return {
        "cpu_seconds": cpu,
        "window": window,
        "sweeps": sweeps,
        "query_ms": 1000 * query / sweeps if sweeps else 0.0,
        "reloads": metric(after, 'campana_socket_reloads_total{reason="sweep"}'),
    }


async def scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    body = await reader.read()
    writer.close()
    return body.decode()


async def main(args: argparse.Namespace) -> None:
    await ensure_database(fresh=True)
    logs = Path(tempfile.mkdtemp(prefix="campana-sweep-"))
    base = await measure(NO_SWEEP_SECONDS, args.users, args.seconds, logs)
    swept = await measure(args.period, args.users, args.seconds, logs)
    extra = swept["cpu_seconds"] - base["cpu_seconds"]
    per_sweep = 1000 * extra / swept["sweeps"] if swept["sweeps"] else float("nan")
    print(f"{args.users} users, one idle tab each, {args.seconds:g} s window (logs: {logs})")
    print(f"  baseline (no sweep): server CPU {base['cpu_seconds']:.2f} s")
    print(
        f"  sweep every {args.period:g} s:  server CPU {swept['cpu_seconds']:.2f} s, "
        f"{swept['sweeps']:.0f} sweeps, {swept['reloads']:.0f} sockets reloaded"
    )
    print(f"  query per sweep (server's histogram): {swept['query_ms']:.1f} ms")
    print(f"  server CPU per sweep: {per_sweep:.1f} ms")
    print(f"  CPU ratio, sweeping / baseline: {swept['cpu_seconds'] / base['cpu_seconds']:.2f}x")
    at_default = per_sweep / 30 / 10  # ms per 30 s, as a percentage of one core
    print(f"  at the default period (30 s): {at_default:.3f} % of one core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=1.0, help="sweep period, seconds")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    try:
        asyncio.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
