"""Dependencies every route shares, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from campana.auth import SEND_SCOPE, Principal, TokenVerifier
from campana.broker import Broker
from campana.capacity import Capacity
from campana.creates import Creator
from campana.errors import InvalidToken, MissingScope
from campana.hub import Hub
from campana.limits import ConnectionLimits
from campana.notifications import BulkChanges
from campana.publisher import Publisher
from campana.settings import Settings
from campana.snapshots import SnapshotLoader


@dataclass(frozen=True, slots=True)
class Services:
    """What ``create_app`` wires together, kept on ``app.state.services``."""

    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    broker: Broker
    publisher: Publisher
    hub: Hub
    creates: Creator
    bulk: BulkChanges
    snapshots: SnapshotLoader
    verifier: TokenVerifier
    capacity: Capacity
    limits: ConnectionLimits


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="A JWT from your identity provider.")


async def current_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise InvalidToken("missing bearer token")
    return await services.verifier.verify(credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def bearer_credentials(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer ...`` header, read as ``HTTPBearer``
    reads them: scheme in any case, a space, then the rest without surrounding whitespace."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


async def producer_from_header(services: Services, authorization: str | None) -> Principal:
    """The producer call's caller, read without dependency injection (its hot path)."""
    credentials = bearer_credentials(authorization)
    if credentials is None:
        raise InvalidToken("missing bearer token")
    return _must_send(await services.verifier.verify(credentials))


def _must_send(principal: Principal) -> Principal:
    if not principal.can_send:
        raise MissingScope(f"this call needs a token with the {SEND_SCOPE!r} scope")
    return principal
