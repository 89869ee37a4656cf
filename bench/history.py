"""A heavy user beside many light ones: reads that must not grow with history, and bulk
changes that must not stall anyone else.

One command, against the local PostgreSQL (or a SQLite file with ``--database sqlite``):

1. Loads a database: one user ``heavy`` with ``--heavy`` items (half unread, a fifth of
   those unseen, a tenth archived, of six types: none of ``CAMPAIGN_ERROR``), a user
   ``light`` with 10, and ``--users`` others with 100 each; counts are made exact.
2. Starts one ``campana serve`` on it and times, for ``heavy`` against ``light`` (the
   baseline, same command): opening a socket (snapshot and counts), ``GET /counts``, and
   every view's first and second (cursor) page.
3. With creates (``--rate`` per second, random light users) and reads (the same rate of
   first pages) flowing, times them for ``--seconds`` without a bulk change (the
   baseline), then during ``read-all`` and during ``archive-all`` of ``heavy``'s items,
   with one create for ``heavy`` in the middle of each: it must stay unread (read-all)
   and in the inbox (archive-all).

Usage::

    .venv/bin/python bench/history.py --heavy 1000000 --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from common import POSTGRES_URL, HttpPool, Server, ensure_database, free_port, percentile
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campana.auth import SEND_SCOPE, mint_token
from campana.models import COUNT_COLUMNS, COUNTED_TYPES
from campana.settings import Settings

HISTORY_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/campana_history"
# Idle connections are let go before the server's keep-alive (5 s) closes them under a request.
KEEPALIVE = httpx.Limits(max_connections=32, keepalive_expiry=2)
HEAVY_TYPES = COUNTED_TYPES[:-1]  # the heavy user has no CAMPAIGN_ERROR item
VIEWS: dict[str, str] = {
    "inbox": "",
    "unread": "is_read=false",
    "unseen": "is_seen=false",
    "archived": "archived=true",
    "one type": "type=CAMPAIGN_SENDING",
    "two types": "type=CAMPAIGN_SENDING&type=TEMPLATE_APPROVED",
    "a type it has none of": "type=CAMPAIGN_ERROR",
    "unread of one type": "type=CAMPAIGN_SENDING&is_read=false",
    "skip 900000": "skip=900000",
}


async def load(engine: AsyncEngine, heavy: int, users: int) -> None:
    """Items straight into the tables, counts computed from them once."""
    started = time.monotonic()
    types = "ARRAY[" + ", ".join(f"'{kind}'" for kind in HEAVY_TYPES) + "]"
    is_pg = engine.dialect.name == "postgresql"
    async with engine.begin() as connection:
        if is_pg:
            await connection.execute(
                text(
                    "INSERT INTO notifications (id, user_id, type, message, link_url, is_read,"  # noqa: S608
                    " is_seen, is_archived, created_at, version)"
                    f" SELECT gen_random_uuid(), 'heavy', ({types})[1 + i % {len(HEAVY_TYPES)}],"
                    " 'item ' || i, NULL, i % 2 = 0, i % 2 = 0 OR i % 10 <> 1, i % 10 = 4,"
                    " now() - (:n - i) * interval '1 second', i"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"n": heavy},
            )
            await connection.execute(
                text(
                    "INSERT INTO notifications (id, user_id, type, message, link_url, is_read,"
                    " is_seen, is_archived, created_at, version)"
                    " SELECT gen_random_uuid(), u.name, 'GENERIC_INFO', 'item ' || i, NULL,"
                    " i % 2 = 0, i % 2 = 0, false, now() - (101 - i) * interval '1 second', i"
                    " FROM (SELECT 'user-' || n AS name FROM generate_series(2, :users) AS n) u,"
                    " generate_series(1, 100) AS i"
                ),
                {"users": users},
            )
            # The baseline: 10 items made as the heavy user's are.
            await connection.execute(
                text(
                    "INSERT INTO notifications (id, user_id, type, message, link_url, is_read,"  # noqa: S608
                    " is_seen, is_archived, created_at, version)"
                    f" SELECT gen_random_uuid(), 'light', ({types})[1 + i % {len(HEAVY_TYPES)}],"
                    " 'item ' || i, NULL, i % 2 = 0, i % 2 = 0 OR i % 10 <> 1, i % 10 = 4,"
                    " now() - (10 - i) * interval '1 second', i"
                    " FROM generate_series(1, 10) AS i"
                )
            )
        else:
            raise SystemExit("loading is written for PostgreSQL")
        counts = ", ".join(
            f"sum(CASE WHEN NOT is_archived AND NOT {_state_of(column)}"
            + (f" AND type = '{kind}'" if (kind := _type_of(column)) is not None else "")
            + " THEN 1 ELSE 0 END)"
            for column in COUNT_COLUMNS
        )
        await connection.execute(
            text(
                f"INSERT INTO user_versions (user_id, version, {', '.join(COUNT_COLUMNS)})"  # noqa: S608
                f" SELECT user_id, max(version), {counts} FROM notifications GROUP BY user_id"
            )
        )
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE notifications"))
        await connection.execute(text("VACUUM ANALYZE user_versions"))
    print(f"loaded {heavy + users * 100:,} items in {time.monotonic() - started:.0f} s")


def _state_of(column: str) -> str:
    return "is_read" if column.startswith("unread") else "is_seen"


def _type_of(column: str) -> str | None:
    for kind in COUNTED_TYPES:
        if column.endswith("_" + kind.lower()):
            return kind
    return None


async def timed(call: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def p50(values: list[float]) -> float:
    return statistics.median(values)


async def reads_against_history(base: str, tokens: dict[str, str], repeat: int) -> None:
    from websockets.asyncio.client import connect

    print(f"\n{'read (p50 ms of ' + str(repeat) + ')':<34}{'light':>9}{'heavy':>9}{'ratio':>8}")

    async def row(name: str, make: Callable[[str], Callable[[], Awaitable[Any]]]) -> None:
        light = p50(await timed(make("light"), repeat))
        heavy = p50(await timed(make("heavy"), repeat))
        print(f"{name:<34}{light:>9.1f}{heavy:>9.1f}{heavy / light:>7.2f}x")

    async with httpx.AsyncClient(base_url=base, limits=KEEPALIVE) as http:

        def socket(user: str) -> Callable[[], Awaitable[Any]]:
            url = base.replace("http", "ws") + f"/api/v1/notifications/ws?token={tokens[user]}"

            async def open_one() -> None:
                async with connect(url + "&counts=1") as tab:
                    for _ in range(3):  # snapshot, unread count, counts
                        await tab.recv()

            return open_one

        def get(path: str) -> Callable[[str], Callable[[], Awaitable[Any]]]:
            def make(user: str) -> Callable[[], Awaitable[Any]]:
                headers = {"Authorization": f"Bearer {tokens[user]}"}

                async def call() -> None:
                    answer = await http.get(path, headers=headers)
                    assert answer.status_code == 200, answer.text

                return call

            return make

        await row("open a socket (counts=1)", socket)
        await row("GET /counts", get("/api/v1/notifications/counts"))
        await row("GET /unread-count", get("/api/v1/notifications/unread-count"))
        for name, query in VIEWS.items():
            await row(f"page: {name}", get(f"/api/v1/notifications/?{query}"))
        for name, query in VIEWS.items():
            if name.startswith("skip"):
                continue
            cursors: dict[str, str] = {}
            for user in ("light", "heavy"):
                first = await http.get(
                    f"/api/v1/notifications/?{query}&limit=1",
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
                link = first.headers.get("link")
                cursors[user] = link.split(";")[0].strip("<>") if link else None  # type: ignore[assignment]
            if None in cursors.values():
                print(f"cursor page: {name:<21}  (the light user has one page of it)")
                continue

            def cursor_page(
                user: str, cursors: dict[str, str] = cursors
            ) -> Callable[[], Awaitable[Any]]:
                return get(cursors[user])(user)

            await row(f"cursor page: {name}", cursor_page)


async def traffic(
    base: str,
    producer: str,
    tokens: dict[str, str],
    users: int,
    rate: float,
    seconds: float,
    during: Callable[[], Awaitable[Any]] | None,
) -> tuple[list[float], list[float], Any]:
    """Creates and reads of light users at ``rate`` each, while ``during`` runs."""
    creates: list[float] = []
    reads: list[float] = []
    port = int(base.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {producer}"}
    stop = time.monotonic() + seconds
    async with (
        HttpPool("127.0.0.1", port, 32, headers) as pool,
        httpx.AsyncClient(base_url=base, limits=KEEPALIVE) as http,
    ):
        pending: set[asyncio.Task[None]] = set()

        async def create() -> None:
            body = orjson.dumps(
                {
                    "user_id": f"user-{random.randint(2, users)}",
                    "type": "GENERIC_INFO",
                    "message": "flowing",
                }
            )
            started = time.perf_counter()
            status, _ = await pool.post("/api/v1/notifications/", body)
            assert status == 201, status
            creates.append((time.perf_counter() - started) * 1000)

        async def read() -> None:
            user = f"user-{random.randint(2, 50)}"
            started = time.perf_counter()
            answer = await http.get(
                "/api/v1/notifications/", headers={"Authorization": f"Bearer {tokens[user]}"}
            )
            assert answer.status_code == 200
            reads.append((time.perf_counter() - started) * 1000)

        result = None
        job = asyncio.ensure_future(during()) if during is not None else None
        tick = 1 / rate
        next_at = time.monotonic()
        while time.monotonic() < stop or (job is not None and not job.done()):
            for work in (create(), read()):
                task = asyncio.ensure_future(work)
                pending.add(task)
                task.add_done_callback(pending.discard)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if job is not None:
            result = await job
        await asyncio.gather(*pending)
    return creates, reads, result


async def main(args: argparse.Namespace) -> None:
    settings = Settings(jwt_secret="history-" + uuid.uuid4().hex)
    await ensure_database(HISTORY_URL, fresh=not args.keep)
    url = HISTORY_URL.replace("postgresql://", "postgresql+asyncpg://")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")},
        "CAMPANA_DATABASE_URL": url,
        "CAMPANA_JWT_SECRET": settings.jwt_secret or "",
        "CAMPANA_DATA_DIR": tempfile.mkdtemp(prefix="campana-history-"),
    }
    subprocess.run(
        [sys.executable, "-m", "campana.cli", "migrate"], env=env, check=True, capture_output=True
    )
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            loaded = (await connection.execute(text("SELECT count(*) FROM user_versions"))).scalar()
        if not loaded:
            await load(engine, args.heavy, args.users)
        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="campana-history-log-")) / "serve.log"
        server = Server(
            [
                sys.executable,
                "-m",
                "campana.cli",
                "serve",
                "--log-level",
                "warning",
                "--port",
                str(port),
            ],
            port,
            env,
            log,
        )
        await server.start()
        base = f"http://127.0.0.1:{port}"
        tokens = {
            user: mint_token(settings, user, ttl_seconds=3600)
            for user in ("heavy", "light", *(f"user-{n}" for n in range(2, 51)))
        }
        producer = mint_token(settings, "bench-producer", scopes=(SEND_SCOPE,))
        try:
            await reads_against_history(base, tokens, args.repeat)
            await bulk_changes(base, producer, tokens, engine, args)
        finally:
            await server.stop()
    finally:
        await engine.dispose()


async def bulk_changes(
    base: str, producer: str, tokens: dict[str, str], engine: AsyncEngine, args: argparse.Namespace
) -> None:
    heavy = {"Authorization": f"Bearer {tokens['heavy']}"}

    def bulk(path: str) -> Callable[[], Awaitable[Any]]:
        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                started = time.monotonic()
                answer = await http.post(f"/api/v1/notifications/{path}", headers=heavy)
                answered = time.monotonic() - started
                await asyncio.sleep(0.3)
                created = (
                    await http.post(
                        "/api/v1/notifications/",
                        json={"user_id": "heavy", "type": "CAMPAIGN_ERROR", "message": "during"},
                        headers={"Authorization": f"Bearer {producer}"},
                    )
                ).json()
                while True:  # done when its last batch has committed
                    counts = (await http.get("/api/v1/notifications/counts", headers=heavy)).json()
                    if path == "read-all" and counts["unread"] <= 1:
                        break
                    if path == "archive-all":
                        inbox = (
                            await http.get("/api/v1/notifications/?limit=2", headers=heavy)
                        ).json()
                        if len(inbox) <= 1:
                            break
                    await asyncio.sleep(0.05)
                return {
                    "status": answer.status_code,
                    "answer": answer.json(),
                    "answered_s": answered,
                    "total_s": time.monotonic() - started,
                    "during": created["id"],
                }

        return run

    heading = f"{'create p50':>11}{'p99':>8}{'read p50':>10}{'p99':>8}"
    print(f"\n{'others during a bulk change (ms)':<34}{heading}")
    base_creates, base_reads, _ = await traffic(
        base, producer, tokens, args.users, args.rate, args.seconds, None
    )
    baseline = (percentile(base_creates, 0.99), percentile(base_reads, 0.99))

    def line(name: str, creates: list[float], reads: list[float]) -> None:
        print(
            f"{name:<34}{p50(creates):>11.1f}{percentile(creates, 0.99):>8.1f}"
            f"{p50(reads):>10.1f}{percentile(reads, 0.99):>8.1f}"
            f"   p99 x{percentile(creates, 0.99) / baseline[0]:.2f}"
            f" / x{percentile(reads, 0.99) / baseline[1]:.2f}"
        )

    line("none (baseline)", base_creates, base_reads)
    for path in ("read-all", "archive-all"):
        creates, reads, result = await traffic(
            base, producer, tokens, args.users, args.rate, args.seconds, bulk(path)
        )
        line(path, creates, reads)
        async with engine.connect() as connection:
            state = (
                await connection.execute(
                    text("SELECT is_read, is_archived FROM notifications WHERE id = :id"),
                    {"id": uuid.UUID(result["during"])},
                )
            ).one()
        print(
            f"  {path}: answered {result['status']} in {result['answered_s']:.2f} s"
            f" ({result['answer']}), done in {result['total_s']:.1f} s; the create during it:"
            f" read={state.is_read} archived={state.is_archived}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heavy", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="reuse a database already loaded")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
