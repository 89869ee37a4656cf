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
from urllib.parse import urlsplit

import fastapi_offline
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campana import __version__, store
from campana.api import errors, operations, rest
from campana.api.deps import Services
from campana.api.operations import RequestMetrics
from campana.auth import TokenVerifier
from campana.broker import Broker, InProcessBroker, RedisBroker
from campana.capacity import Capacity, ConnectionCaps
from campana.connection import SocketLimits
from campana.creates import Creator, purge_idempotency_keys
from campana.hub import Hub
from campana.limits import ConnectionLimits
from campana.notifications import BulkChanges
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
        caps = ConnectionCaps.of(settings)
        logger.info(
            "holding up to %d connections, %d sockets not signed in",
            caps.connections,
            caps.unauthenticated_sockets,
        )
        hub = Hub(
            broker,
            snapshots,
            keepalive_seconds=settings.keepalive_seconds,
            sweep_seconds=settings.sweep_seconds,
            limits=SocketLimits(
                send_queue_size=settings.ws_send_queue_size,
                per_user=settings.max_sockets_per_user,
                per_process=caps.signed_in_sockets,
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
            bulk=BulkChanges(db, publisher),
            snapshots=snapshots,
            verifier=TokenVerifier(settings),
            capacity=Capacity(caps),
            limits=ConnectionLimits.of(settings),
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
            services_seconds = settings.stop_plan.services_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(services_seconds):
                    # Before the hub closes the broker: what is queued is written and published.
                    await creates.close()
                    await services.bulk.close()
                    await publisher.close()
                    await hub.close(services_seconds / 2)
            await engine.dispose()

    app = FastAPI(
        title="Campana",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below from the package's own files: no CDN needed
        redoc_url=None,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins or ["*"],
        allow_methods=["GET", "POST", "PATCH"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        expose_headers=["Idempotent-Replayed", "Link"],
    )
    app.add_middleware(RequestMetrics)
    app.add_middleware(RelativeRedirects)
    app.add_middleware(rest.ProducerCalls)
    app.include_router(rest.router)
    app.include_router(operations.router)
    _serve_demo(app)
    _serve_api_docs(app)
    _install_error_handlers(app)
    return app


# The demo's pages: its own scripts and styles only, never framed, and the token in its
# address never sent on as a Referer. It may call a token endpoint elsewhere (`token_url`).
DEMO_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https: ws: wss:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The API docs run Swagger UI's inline start-up script: no CSP, the rest alike.
DOCS_HEADERS = {
    name: value for name, value in DEMO_HEADERS.items() if name != "Content-Security-Policy"
}
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


class _Files(StaticFiles):
    """Static files with the pages' security headers."""

    def __init__(self, *, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self._headers = headers

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(self._headers)
        return response


def _serve_demo(app: FastAPI) -> None:
    """The demo notification centre at `/` (built from clients/typescript/demo)."""
    if not (STATIC / "index.html").exists():
        return
    app.mount("/assets", _Files(directory=STATIC / "assets", headers=DEMO_HEADERS), name="assets")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        headers = {"Cache-Control": "no-cache", **DEMO_HEADERS}
        return FileResponse(STATIC / "index.html", headers=headers)


def _serve_api_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs` and ReDoc at `/redoc`, from files installed with the package."""
    assets = "/docs/assets"
    app.mount(assets, _Files(directory=DOCS_ASSETS, headers=DOCS_HEADERS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Campana API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )
        page.headers.update(DOCS_HEADERS)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title="Campana API",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(DOCS_HEADERS)
        return page


class RelativeRedirects:
    """Redirects the app makes itself (``/assets`` to ``/assets/``) name a path, not a host.

    Starlette builds them from the request's ``Host``: ``Host: evil.example`` would send
    the browser to ``http://evil.example/assets/``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                message["headers"] = [
                    (name, _path_only(value) if name == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, send_relative)


def _path_only(location: bytes) -> bytes:
    target = urlsplit(location.decode("latin-1"))
    path = target.path if target.path.startswith("/") else "/" + target.path
    # "//host" would still be read as a host.
    path = "/" + path.lstrip("/")
    return (path + (f"?{target.query}" if target.query else "")).encode("latin-1")


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
