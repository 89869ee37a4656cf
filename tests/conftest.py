"""The tests' fixtures: real servers on free ports, real SQLite and PostgreSQL, real sockets.

Every test talks to the service over TCP; what the fixtures are built from is in
``tests/support/``. ``CAMPANA_TEST_REQUIRE_SERVICES=1`` turns an unreachable PostgreSQL
or Redis into a failure.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campana import migrations

from .support.browser import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_INSTALLED
from .support.redis_server import RedisServer
from .support.report import STALENESS
from .support.servers import (
    DATABASES,
    HOUR_KEEPALIVE_SECONDS,
    POSTGRES_URL,
    REDIS_URL,
    REQUIRE_SERVICES,
    SOCKET_SETUPS,
    Server,
    ServerPool,
    Setup,
    reset_postgres,
)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """An unclosed socket or file is reported (as an error) against the test that left it,
    not against whichever later test happens to trigger the collection."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("campana-data")


@pytest.fixture(scope="session")
def database_urls(data_dir: Path) -> dict[str, str]:
    """Where each service is; PostgreSQL is emptied and migrated once."""
    urls = {"sqlite": "sqlite"}
    try:
        reset_postgres(POSTGRES_URL)
        migrations.upgrade(POSTGRES_URL)
        urls["postgresql"] = POSTGRES_URL
    except OSError as error:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable: {error}")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        urls["redis"] = REDIS_URL
    except redis.ConnectionError as error:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis at {REDIS_URL} is not reachable: {error}")
    return urls


@pytest.fixture(scope="session")
async def server_pool(database_urls: dict[str, str], data_dir: Path) -> AsyncIterator[ServerPool]:
    """Every server of the session: each distinct one starts on first use, and all stop at
    the end. A test that needs settings of its own asks it for a server."""
    pool = ServerPool(database_urls, data_dir)
    yield pool
    await pool.close()


@pytest.fixture(params=DATABASES)
async def rest_server(request: pytest.FixtureRequest, server_pool: ServerPool) -> Server:
    """An in-process server on each database, so a test using it runs twice (``[sqlite]``,
    ``[postgresql]``): for REST behaviour, and for what one server per database shows of
    the socket (its handshake and frame parsing)."""
    return await server_pool.get(request.param, "inprocess")


@pytest.fixture(params=SOCKET_SETUPS, ids=lambda setup: setup.id)
async def socket_server(request: pytest.FixtureRequest, server_pool: ServerPool) -> Server:
    """A server in each of the five ``SOCKET_SETUPS``, so a test using it runs five times
    (``[sqlite-inprocess-memory]`` ... ``[postgresql-process-redis]``): for socket
    behaviour, which must hold whatever the database, the process and the broker."""
    setup: Setup = request.param
    return await server_pool.in_setup(setup)


@pytest.fixture(params=SOCKET_SETUPS, ids=lambda setup: setup.id)
async def hour_keepalive_socket_server(
    request: pytest.FixtureRequest, server_pool: ServerPool
) -> Server:
    """As ``socket_server`` (a test using it runs five times, once in each setup), with a
    keepalive sent once an hour: within a test, every keepalive a tab gets is the answer
    to its ``ping``."""
    setup: Setup = request.param
    return await server_pool.in_setup(setup, keepalive_seconds=HOUR_KEEPALIVE_SECONDS)


@pytest.fixture
def spare_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STALENESS:
        return
    terminalreporter.section("staleness after faults (s, until every open tab held the truth)")
    for name, seconds in STALENESS.items():
        terminalreporter.write_line(f"{seconds:6.2f}  {name}")


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
async def engines() -> AsyncIterator[dict[str, AsyncEngine]]:
    engines: dict[str, AsyncEngine] = {}
    yield engines
    for engine in engines.values():
        await engine.dispose()


@pytest.fixture
def rows(engines: dict[str, AsyncEngine]) -> Any:
    """``await rows(server, user)``: the user's notification rows, straight from the database."""

    async def read(server: Server, user_id: str) -> list[dict[str, Any]]:
        url = server.settings.resolved_database_url
        if url not in engines:
            engines[url] = create_async_engine(url)
        async with engines[url].connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT id, message, type, link_url, is_read FROM notifications"
                    " WHERE user_id = :user_id ORDER BY created_at, id"
                ),
                {"user_id": user_id},
            )
            return [dict(row) for row in result.mappings()]

    return read


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium (Playwright's ``Browser``), for the browser tests."""
    if not CHROMIUM_INSTALLED:
        if REQUIRE_SERVICES:
            pytest.fail(f"Chromium is not installed at {CHROMIUM}")
        pytest.skip("Chromium is not installed")
    from playwright.async_api import async_playwright  # only the browser tests need it

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()
