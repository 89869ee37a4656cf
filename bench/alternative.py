"""The usual alternative: the same job built the way most teams would.

FastAPI for the producer call, python-socketio with its Redis manager (one room per user)
for the sockets, SQLAlchemy on PostgreSQL for storage. A socket authenticates with
``auth={"token": <JWT>}``, joins its user's room, and gets ``snapshot`` and
``unread_count.updated``; ``POST /notifications`` stores one item per user and emits
``notification.created`` and ``unread_count.updated`` to each user's room.

Usage: ``python bench/alternative.py PORT`` with CAMPANA_BENCH_POSTGRES_URL,
CAMPANA_BENCH_REDIS_URL and CAMPANA_BENCH_SECRET set.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import socketio
import uvicorn
from common import BACKLOG
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Boolean, DateTime, String, Text, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL = os.environ["CAMPANA_BENCH_POSTGRES_URL"].replace(
    "postgresql://", "postgresql+asyncpg://"
)
SECRET = os.environ["CAMPANA_BENCH_SECRET"]

engine = create_async_engine(DATABASE_URL, pool_size=10, max_overflow=10)
Session = async_sessionmaker(engine, expire_on_commit=False)
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["CAMPANA_BENCH_REDIS_URL"]),
    cors_allowed_origins="*",
)
api = FastAPI()


class Base(DeclarativeBase):
    pass


class Notification(Base):
    __tablename__ = "alternative_notifications"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    link_url: Mapped[str | None] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def as_item(row: Notification) -> dict[str, Any]:
    return {
        "id": row.id,
        "message": row.message,
        "type": row.type,
        "link_url": row.link_url,
        "is_read": row.is_read,
        "created_at": row.created_at.isoformat(),
    }


async def unread(session: Any, user: str) -> int:
    query = select(func.count()).where(Notification.user_id == user, ~Notification.is_read)
    return int(await session.scalar(query) or 0)


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
    try:
        claims = jwt.decode((auth or {}).get("token", ""), SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return False
    user = claims["sub"]
    await sio.enter_room(sid, user)
    async with Session() as session:
        rows = await session.scalars(
            select(Notification)
            .where(Notification.user_id == user)
            .order_by(Notification.created_at.desc())
            .limit(20)
        )
        items = [as_item(row) for row in rows]
        count = await unread(session, user)
    await sio.emit("snapshot", items, to=sid)
    await sio.emit("unread_count.updated", {"count": count}, to=sid)
    return True


class Create(BaseModel):
    user_ids: list[str]
    type: str = "GENERIC_INFO"
    message: str
    link_url: str | None = None


@api.post("/notifications", status_code=201)
async def create(body: Create) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = [
        Notification(
            id=str(uuid.uuid4()),
            user_id=user,
            type=body.type,
            message=body.message,
            link_url=body.link_url,
            is_read=False,
            created_at=now,
        )
        for user in body.user_ids
    ]
    async with Session.begin() as session:
        session.add_all(rows)
        await session.flush()
        counts = {user: await unread(session, user) for user in body.user_ids}
    for row in rows:
        await sio.emit("notification.created", as_item(row), room=row.user_id)
        await sio.emit("unread_count.updated", {"count": counts[row.user_id]}, room=row.user_id)
    return [as_item(row) for row in rows]


@api.on_event("startup")
async def create_table() -> None:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


app = socketio.ASGIApp(sio, other_asgi_app=api)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", backlog=BACKLOG)
