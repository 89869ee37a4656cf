"""The socket ``/api/v1/notifications/ws?token=<JWT>``."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, WebSocket

from campana import notifications
from campana.api.deps import Services
from campana.errors import InvalidToken
from campana.hub import CLOSE_ORIGIN_REFUSED, CLOSE_TOKEN_REFUSED

router = APIRouter(prefix="/api/v1/notifications")


@router.websocket("/ws")
async def notifications_socket(websocket: WebSocket, token: str | None = None) -> None:
    services: Services = websocket.app.state.services
    # Accept first, always: a browser can read a close code but not a refused upgrade.
    await websocket.accept()
    if not _origin_allowed(websocket, services.settings.allowed_origins):
        await websocket.close(CLOSE_ORIGIN_REFUSED)
        return
    try:
        principal = await services.verifier.verify(token)
    except InvalidToken:
        await websocket.close(CLOSE_TOKEN_REFUSED)
        return
    await services.hub.serve(
        websocket,
        user_id=principal.user_id,
        expires_at=principal.expires_at,
        load_first_frames=partial(
            notifications.snapshot,
            services.db,
            user_id=principal.user_id,
            size=services.settings.snapshot_size,
        ),
    )


def _origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """Browsers always send Origin; clients that are not browsers may omit it."""
    origin = websocket.headers.get("origin")
    return not allowed or origin is None or origin in allowed
