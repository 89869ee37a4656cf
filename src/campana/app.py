"""``create_app(settings)``: wires store, broker and hub; starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from campana import __version__, store
from campana.api import errors, operations, rest
from campana.api.deps import Services
from campana.api.operations import RequestMetrics
from campana.auth import TokenVerifier
from campana.broker import Broker, InProcessBroker, RedisBroker
from campana.creates import Creator, purge_idempotency_keys
from campana.hub import Hub, SocketLimits
from campana.publisher import Publisher
from campana.settings import Settings, load_settings
from campana.snapshots import SnapshotLoader

logger = logging.getLogger(__name__)

IDEMPOTENCY_PURGE_PERIOD_SECONDS = 3600.0
STATIC = Path(__file__).parent / "static"

DESCRIPTION = """
Campana stores in-app notifications and pushes them live to every open tab of their user.

* **Users** call the REST endpoints with `Authorization: Bearer <JWT>` and open the socket
  `/api/v1/notifications/ws?token=<JWT>` (described in `docs/protocol.md`).
* **Producers** (your backend) create notifications with a token whose `scope` holds
  `notifications:send`.

Errors are JSON: `{"error": "<code>", "detail": "<what is wrong>"}`.
"""


def create_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        return RedisBroker(settings.redis_url)
    return InProcessBroker()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Services]]:
        engine = store.create_engine(settings)
        db = store.create_sessionmaker(engine)
        broker = create_broker(settings)
        publisher = Publisher(db, broker)
        snapshots = SnapshotLoader(db, size=settings.snapshot_size)
        hub = Hub(
            broker,
            snapshots,
            keepalive_seconds=settings.keepalive_seconds,
            sweep_seconds=settings.sweep_seconds,
            limits=SocketLimits(
                send_queue_size=settings.ws_send_queue_size,
                per_user=settings.max_sockets_per_user,
                per_process=settings.max_sockets_per_process,
            ),
        )
        creates = Creator(db, publisher, max_recipients=settings.max_recipients)
        services = Services(
            settings=settings,
            engine=engine,
            db=db,
            broker=broker,
            publisher=publisher,
            hub=hub,
            creates=creates,
            snapshots=snapshots,
            verifier=TokenVerifier(settings),
        )
        app.state.services = services
        await hub.start()
        creates.start()
        purge = asyncio.create_task(_purge_idempotency_keys(services))
        try:
            # The lifespan state reaches the socket protocol (api/ws.py) as its app_state.
            yield {"services": services}
        finally:
            purge.cancel()
            rest = settings.stop_plan.services_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rest):
                    # Before the hub closes the broker: what is queued is written and published.
                    await creates.close()
                    await publisher.close()
                    await hub.close(rest / 2)
            await engine.dispose()

    app = FastAPI(
        title="Campana",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins or ["*"],
        allow_methods=["GET", "POST", "PATCH"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        expose_headers=["Idempotent-Replayed", "Link"],
    )
    app.add_middleware(RequestMetrics)
    app.add_middleware(rest.ProducerCalls)
    app.include_router(rest.router)
    app.include_router(operations.router)
    _serve_demo(app)
    _install_error_handlers(app)
    return app


def _serve_demo(app: FastAPI) -> None:
    """The demo notification centre at `/` (built from clients/typescript/demo)."""
    if not (STATIC / "index.html").exists():
        return
    app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


# Collect young objects every 50,000 allocations instead of 700: a server holding tens of
# thousands of sockets spent whole collections of 100-300 ms in the middle of deliveries
# (p99 create-to-receipt 185 ms -> 52 ms at 500 creates/s in bench/compare.py).
GC_THRESHOLDS = (50_000, 50, 1_000)


def create_app_from_environment() -> FastAPI:
    """Factory for ``campana serve`` (each worker reads the same environment).

    Also tunes the garbage collector for a long-running server: what exists after start-up
    (modules, the app) is frozen out of every collection.
    """
    app = create_app(load_settings())
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    for kind, renderer in errors.RENDERERS.items():
        app.add_exception_handler(kind, _handler(renderer))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _error: Exception) -> JSONResponse:
        # Logged by the server with its traceback; the client learns nothing internal.
        return JSONResponse({"error": "internal_error", "detail": "internal error"}, 500)


def _handler(
    renderer: Callable[[Any], JSONResponse],
) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
    async def handle(_request: Request, error: Any) -> JSONResponse:
        return renderer(error)

    return handle


async def _purge_idempotency_keys(services: Services) -> None:
    ttl = timedelta(hours=services.settings.idempotency_ttl_hours)
    while True:
        try:
            await purge_idempotency_keys(services.db, older_than=ttl)
        except Exception:
            logger.exception("purging old idempotency keys failed; will try again")
        await asyncio.sleep(IDEMPOTENCY_PURGE_PERIOD_SECONDS)
