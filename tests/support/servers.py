"""Real servers on free ports, for tests: one in the test process (uvicorn as a task on
the test's event loop) or a separate ``campana serve`` process, and the pool that starts
each distinct one once per session. ``CAMPANA_TEST_REQUIRE_SERVICES=1`` turns an
unreachable PostgreSQL or Redis into a failure instead of a skip."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from campana import create_app, migrations
from campana.auth import SEND_SCOPE, mint_token
from campana.cli import listening_socket, server_options
from campana.settings import Settings

from .tabs import Tab
from .waits import until

POSTGRES_URL = os.environ.get(
    "CAMPANA_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CAMPANA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("CAMPANA_TEST_REQUIRE_SERVICES") == "1"
JWT_SECRET = "test-secret-" + uuid.uuid4().hex
ALLOWED_ORIGIN = "http://app.example"
DATABASES = ("sqlite", "postgresql")
# The test servers send a keepalive every 30 s; one whose period is an hour sends none
# during a test, so that any keepalive a tab gets there answers its ping.
HOUR_KEEPALIVE_SECONDS = 3600.0


@dataclass(frozen=True)
class Setup:
    """What a server is built on: a database, where it runs (``inprocess``: in the test
    process; ``process``: a ``campana serve`` of its own) and its broker (``memory``: the
    in-process one; ``redis``: the test Redis)."""

    database: str
    mode: str
    broker: str = "memory"

    @property
    def id(self) -> str:
        return f"{self.database}-{self.mode}-{self.broker}"


# The five setups every socket test runs in (the ``socket_server`` fixture): each database
# with the in-process broker, in the test process and as a process of its own, and the
# setup that scales out, PostgreSQL with Redis between processes.
SOCKET_SETUPS = (
    Setup("sqlite", "inprocess"),
    Setup("postgresql", "inprocess"),
    Setup("sqlite", "process"),
    Setup("postgresql", "process"),
    Setup("postgresql", "process", "redis"),
)


def campana(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "campana.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running Campana and what a test needs to talk to it."""

    settings: Settings
    base_url: str
    database: str
    mode: str
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/api/v1/notifications/ws"

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            # Servers are shared between tests, so a connection may sit idle for a while.
            # Uvicorn closes idle ones after 5 s, as httpx does by default: a request on a
            # connection the server is closing at that moment fails with ReadError. The
            # client lets its idle connections go well before the server does.
            limits = httpx.Limits(keepalive_expiry=2.0)
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits)
        return self._http

    def token(self, user_id: str, *, ttl: int = 3600, scopes: tuple[str, ...] = ()) -> str:
        return mint_token(self.settings, user_id, ttl_seconds=ttl, scopes=scopes)

    def auth(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    @property
    def producer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('producer', scopes=(SEND_SCOPE,))}"}

    async def send(self, user_id: str, message: str = "hello", **fields: Any) -> dict[str, Any]:
        body = {"user_id": user_id, "type": "GENERIC_INFO", "message": message, **fields}
        answer = await self.http.post("/api/v1/notifications/", json=body, headers=self.producer)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    async def assert_quiet(self, tab: Tab, user_id: str) -> None:
        """Nothing more reached ``tab`` (of ``user_id``): the next frame is a marker created
        now, which travels the same road as anything that could have come before it (a
        201 means published, and one broker connection keeps a process's messages in
        order)."""
        marker = await self.send(user_id, "marker")
        assert await tab.next_event() == {"event": "notification.created", "payload": marker}
        assert (await tab.next_event())["event"] == "unread_count.updated"

    async def mark_read(self, user_id: str, notification_id: str) -> httpx.Response:
        return await self.http.patch(
            f"/api/v1/notifications/{notification_id}/read", headers=self.auth(user_id)
        )

    async def unread_count(self, user_id: str) -> int:
        answer = await self.http.get(
            "/api/v1/notifications/unread-count", headers=self.auth(user_id)
        )
        assert answer.status_code == 200, answer.text
        count: int = answer.json()["count"]
        return count

    def log(self) -> str:
        """What a ``campana serve`` process has written to its log so far."""
        assert self.log_path is not None, "an in-process server logs into the test's output"
        return self.log_path.read_text(errors="replace")

    async def logged(self, text: str, *, since: int = 0) -> str:
        """The log from character ``since`` on, once that part holds ``text``. The process
        writes in its own time: a line that follows what a test looks for is its marker."""
        await until(lambda: text in self.log()[since:], within=10, what=f"{text!r} logged")
        return self.log()[since:]

    def connect(self, user_id: str, *, counts: bool = False, **options: Any) -> Tab:
        """A tab of ``user_id``; ``counts``: opened with ``&counts=1``, so that it is sent
        ``counts.updated`` too."""
        token = options.pop("token", None) or self.token(user_id)
        return Tab(f"{self.ws_url}?token={token}{'&counts=1' if counts else ''}", **options)

    def connect_raw(self, query: str = "", **options: Any) -> Tab:
        return Tab(f"{self.ws_url}{query}", **options)


class _QuietServer(uvicorn.Server):
    """Uvicorn inside the test process must leave pytest's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def reset_postgres(url: str) -> None:
    async def reset() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
        finally:
            await engine.dispose()

    asyncio.run(reset())


def database_url(database_urls: dict[str, str], database: str) -> str:
    if database not in database_urls:
        pytest.skip(f"{database} is not reachable")
    return database_urls[database]


class ServerPool:
    """Starts each distinct server once per session; tests share them (users are unique)."""

    def __init__(self, database_urls: dict[str, str], data_dir: Path) -> None:
        self._database_urls = database_urls
        self._data_dir = data_dir
        self._servers: dict[tuple[Any, ...], Server] = {}
        self._started: list[Server] = []  # shared or not: their clients close at the end
        self._stops: list[Any] = []

    @property
    def redis_url(self) -> str:
        """The test Redis (skips, or fails when services are required, if unreachable)."""
        return database_url(self._database_urls, "redis")

    async def get(
        self, database: str, mode: str, *, name: str = "", broker: str = "memory", **overrides: Any
    ) -> Server:
        """A server, started on first use and shared by every test asking for the same one.

        ``broker="redis"`` uses the test Redis; ``name`` tells apart instances otherwise
        alike (two instances of one cluster).
        """
        if broker == "redis":
            overrides["redis_url"] = database_url(self._database_urls, "redis")
        key = (database, mode, name, tuple(sorted(overrides.items())))
        if key not in self._servers:
            self._servers[key] = await self.start(database, mode, **overrides)
        return self._servers[key]

    async def in_setup(self, setup: Setup, **overrides: Any) -> Server:
        """``get`` for a server built as ``setup`` says."""
        return await self.get(setup.database, setup.mode, broker=setup.broker, **overrides)

    async def start(
        self, database: str, mode: str, *, descriptor_limit: int | None = None, **overrides: Any
    ) -> Server:
        """A server of its own; stopped at the end of the session unless stopped before.

        ``descriptor_limit`` starts a ``campana serve`` process with that many file
        descriptors at most (soft and hard).
        """
        return await self._start(database, mode, overrides, descriptor_limit)

    async def _start(
        self,
        database: str,
        mode: str,
        overrides: dict[str, Any],
        descriptor_limit: int | None = None,
    ) -> Server:
        port = free_port()
        url = database_url(self._database_urls, database)
        if database == "sqlite":
            # A file per server; a separate process migrates its own, as `serve` does.
            url = f"sqlite+aiosqlite:///{self._data_dir / f'server-{port}.sqlite3'}"
            if mode == "inprocess":
                await asyncio.to_thread(migrations.upgrade, url)
        options: dict[str, Any] = {
            "database_url": url,
            "jwt_secret": JWT_SECRET,
            "data_dir": self._data_dir,
            "allowed_origins": [ALLOWED_ORIGIN],
            "keepalive_seconds": 30.0,
            # Many servers share one PostgreSQL (100 connections) during a session.
            "database_pool_size": 2,
            **overrides,
        }
        settings = Settings(**options)
        base_url = f"http://127.0.0.1:{port}"
        if mode == "inprocess":
            server = Server(settings, base_url, database, mode)
            self._stops.append(await start_in_process(settings, port))
        else:
            log_path = self._data_dir / f"serve-{port}.log"
            server = Server(settings, base_url, database, mode, log_path=log_path, options=options)
            stop, server.process = start_process(options, port, log_path, descriptor_limit)
            self._stops.append(stop)
        await wait_until_up(base_url)
        self._started.append(server)
        return server

    async def restart(self, server: Server) -> Server:
        """Stop a `campana serve` process (SIGTERM) and start it again on the same port."""
        assert server.process is not None and server.log_path is not None
        server.process.terminate()
        await asyncio.to_thread(server.process.wait, 30)
        port = int(server.base_url.rsplit(":", 1)[1])
        stop, server.process = start_process(server.options, port, server.log_path)
        self._stops.append(stop)
        await wait_until_up(server.base_url)
        return server

    async def close(self) -> None:
        for server in self._started:
            if server._http is not None:
                await server._http.aclose()
        # Every server is stopped, even when stopping one of them fails.
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                result = stop()
                if asyncio.iscoroutine(result):
                    await result


async def start_in_process(settings: Settings, port: int) -> Any:
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        timeout_graceful_shutdown=5,
        **server_options(settings),
    )
    server = _QuietServer(config)
    sock = listening_socket("127.0.0.1", port, settings.socket_send_buffer_bytes)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, 30)

    return stop


def environment(options: dict[str, Any]) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")}
    for name, value in options.items():
        rendered = ",".join(value) if isinstance(value, list) else str(value)
        environment[f"CAMPANA_{name.upper()}"] = rendered
    return environment


def start_process(
    options: dict[str, Any], port: int, log_path: Path, descriptor_limit: int | None = None
) -> tuple[Any, subprocess.Popen[bytes]]:
    def limit_descriptors() -> None:
        if descriptor_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptor_limit, descriptor_limit))

    with log_path.open("w") as log:  # the child writes to its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "campana.cli", "serve", "--port", str(port)],
            env=environment(options),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_descriptors if descriptor_limit is not None else None,
        )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()

    return stop, process


async def wait_until_up(base_url: str) -> None:
    # Generous: two workers starting on two busy cores have taken more than 30 s.
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                answer = await client.get("/api/v1/notifications/unread-count")
                if answer.status_code == 401:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {base_url} did not start")
