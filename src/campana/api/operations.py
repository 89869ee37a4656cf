"""Liveness, readiness and metrics, for load balancers and Prometheus."""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campana import metrics
from campana.api.deps import ServicesDep, bearer_credentials
from campana.api.errors import EveryMethodRoute
from campana.errors import InvalidToken

router = APIRouter(tags=["operations"], route_class=EveryMethodRoute)

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database and broker are reachable, and connections are under the cap",
    responses={
        503: {"description": "`failed` names what is unreachable, or `capacity` near the cap."}
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    failed: list[str] = []
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with services.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception:
        failed.append("database")
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await services.broker.ping()
    except Exception:
        failed.append("broker")
    if not services.capacity.ready:
        failed.append("capacity")  # near the connection cap: new tabs go elsewhere
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics_reader(services: ServicesDep, request: Request) -> None:
    """With ``CAMPANA_METRICS_TOKEN`` set, only a scraper holding it reads the metrics."""
    expected = services.settings.metrics_token
    if not expected:
        return
    given = bearer_credentials(request.headers.get("authorization"))
    # Compared in constant time, as bytes: compare_digest refuses non-ASCII text.
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidToken("/metrics needs Authorization: Bearer <CAMPANA_METRICS_TOKEN>")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(metrics_reader)],
    responses={401: {"description": "`CAMPANA_METRICS_TOKEN` is set and was not given."}},
)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


class RequestMetrics:
    """Times each HTTP request by route template (never by raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            metrics.observe_request(scope["method"], template, status, started)
