"""What operators see: health, readiness, metrics, limits, workers and logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support.servers import Server, ServerPool, campana, environment, free_port, wait_until_up
from .support.tabs import Tab

pytestmark = pytest.mark.timeout(120)


async def test_healthz_and_readyz_answer_when_all_is_reachable(rest_server: Server) -> None:
    assert (await rest_server.http.get("/healthz")).json() == {"status": "ok"}
    ready = await rest_server.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}  # nothing about the process's load


def sample(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels, as exported), 0 when absent."""
    prefix = name + " "
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_metrics_count_sockets_events_and_latency(rest_server: Server, user: str) -> None:
    created = (
        "campana_request_duration_seconds_count"
        '{method="POST",route="/api/v1/notifications/",status="201"}'
    )
    names = (
        "campana_open_sockets",
        "campana_events_published_total",
        "campana_delivery_latency_seconds_count",
        created,
    )
    before = (await rest_server.http.get("/metrics")).text
    async with rest_server.connect(user) as tab:
        await tab.start()
        await rest_server.send(user)
        await tab.next_event()
        during = (await rest_server.http.get("/metrics")).text
    change = {name: sample(during, name) - sample(before, name) for name in names}
    assert change == {
        "campana_open_sockets": 1,
        # notification.created, unread_count.updated, counts.updated (for sockets that ask)
        "campana_events_published_total": 3,
        "campana_delivery_latency_seconds_count": 1,  # one publish
        created: 1,
    }


async def test_a_users_socket_beyond_the_cap_closes_the_oldest_with_4429(
    server_pool: ServerPool, user: str
) -> None:
    server = await server_pool.get("sqlite", "inprocess", max_sockets_per_user=2)
    async with contextlib.AsyncExitStack() as stack:
        oldest, middle = [await stack.enter_async_context(server.connect(user)) for _ in "ab"]
        for tab in (oldest, middle):
            await tab.start()
        newest = await stack.enter_async_context(server.connect(user))
        await newest.start()
        assert await oldest.close_code() == 4429
        item = await server.send(user)
        for tab in (middle, newest):
            assert (await tab.next_event())["payload"] == item


async def test_sockets_beyond_the_process_cap_are_closed_with_1013(
    server_pool: ServerPool, user: str
) -> None:
    server = await server_pool.get("sqlite", "inprocess", max_sockets_per_process=2)
    async with contextlib.AsyncExitStack() as stack:
        tabs: list[Tab] = []
        for i in range(2):
            tabs.append(await stack.enter_async_context(server.connect(f"{user}-{i}")))
            await tabs[-1].start()
        refused = await stack.enter_async_context(server.connect(f"{user}-2"))
        assert await refused.close_code() == 1013


def test_workers_without_redis_refuse_to_start(tmp_path: os.PathLike[str]) -> None:
    result = campana("serve", "--workers", "2", env=environment({"data_dir": tmp_path}))
    assert result.returncode == 2
    assert "CAMPANA_REDIS_URL" in result.stderr


async def test_workers_on_one_port_all_reach_the_users_sockets(
    server_pool: ServerPool, user: str, tmp_path: Path
) -> None:
    template = await server_pool.get("postgresql", "process", name="workers", broker="redis")
    port = free_port()
    options = {
        "database_url": template.settings.database_url,
        "redis_url": template.settings.redis_url,
        "jwt_secret": template.settings.jwt_secret,
        "database_pool_size": 2,
    }
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "campana.cli", "serve", "--port", str(port), "--workers", "2"],
            env=environment(options),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Server(template.settings, f"http://127.0.0.1:{port}", "postgresql", "process")
        await wait_until_up(server.base_url)
        async with contextlib.AsyncExitStack() as stack:
            tabs = [await stack.enter_async_context(server.connect(user)) for _ in range(8)]
            await asyncio.gather(*(tab.start() for tab in tabs))
            for tab in tabs:
                tab.follow()
            items = [await server.send(user, f"n{i}") for i in range(4)]
            expected = {i["id"] for i in items}
            # Live, or inside a snapshot: a tab opened before its worker's first Redis
            # connection has its state read again once that connection is up.
            deadline = time.monotonic() + 10
            while not all(
                expected <= set(tab.view.items) and tab.view.unread_count == 4 for tab in tabs
            ):
                assert time.monotonic() < deadline, [tab.received for tab in tabs]
                await asyncio.sleep(0.05)
        await server.http.aclose()
    finally:
        process.terminate()
        process.wait(30)


async def test_json_logs_are_one_object_a_line_without_tokens(
    server_pool: ServerPool, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", log_format="json")
    token = server.token(user)
    async with server.connect(user, token=token) as tab:
        await tab.start()
    since = len(server.log())
    await server.http.get("/healthz")
    await server.logged("/healthz", since=since)  # the last request's line
    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r.get("path") == "/healthz" and r.get("status") == 200 for r in records)
    assert token not in log
