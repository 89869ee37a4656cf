"""The queries behind list, snapshot and unread count use their indexes on both databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from campana import migrations, notifications, store

from .conftest import DATABASES, database_url

Query = Callable[[AsyncSession], Awaitable[Any]]
QUERIES: dict[str, tuple[Query, str]] = {
    "unread-count": (lambda s: store.unread_count(s, "u"), "ix_notifications_user_unread"),
    "newest-first": (
        lambda s: store.list_notifications(s, "u", skip=0, limit=20),
        "ix_notifications_user_newest",
    ),
    "newest-first-of-many-users": (
        lambda s: store.newest_notifications(s, ["u", "v"], 20),
        "ix_notifications_user_newest",
    ),
}


async def migrated_engine(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> AsyncEngine:
    """The test PostgreSQL, or a fresh SQLite file migrated like a new install."""
    url = database_url(database_urls, database)
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
        await asyncio.to_thread(migrations.upgrade, url)
    return create_async_engine(url)


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("database", DATABASES)
async def test_query_uses_its_index(
    database_urls: dict[str, str], tmp_path: Path, database: str, query: str
) -> None:
    engine = await migrated_engine(database_urls, tmp_path, database)
    executed: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(*args: Any) -> None:
        executed.append((args[2], args[3]))

    run, index = QUERIES[query]
    try:
        async with store.create_sessionmaker(engine)() as session:
            await run(session)
            statement, parameters = executed[-1]
            if database == "postgresql":
                # On a tiny table a sequential scan wins; the question is whether the index serves.
                await session.execute(text("SET LOCAL enable_seqscan = off"))
                explain = "EXPLAIN "
            else:
                explain = "EXPLAIN QUERY PLAN "
            connection = await session.connection()
            plan = await connection.exec_driver_sql(explain + statement, parameters)
            rendered = "\n".join(str(row) for row in plan)
    finally:
        await engine.dispose()
    assert index in rendered, rendered


@pytest.mark.parametrize("database", DATABASES)
async def test_a_user_named_k_times_gets_k_consecutive_versions(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    """Creates sharing a transaction: the answer is each user's last version."""
    engine = await migrated_engine(database_urls, tmp_path, database)
    first, second = f"a-{tmp_path.name}", f"b-{tmp_path.name}"
    try:
        sessions = store.create_sessionmaker(engine)
        async with sessions.begin() as session:
            assert await store.bump_versions(session, [first, second, first]) == {
                first: 2,
                second: 1,
            }
        async with sessions.begin() as session:
            assert await store.bump_versions(session, [second, first, second, second]) == {
                first: 3,
                second: 4,
            }
            assert await store.current_version(session, second) == 4
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database", DATABASES)
async def test_snapshots_of_many_users_read_in_one_go_hold_each_users_newest(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    engine = await migrated_engine(database_urls, tmp_path, database)
    busy, quiet, empty = (f"{name}-{tmp_path.name}" for name in ("busy", "quiet", "empty"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        store.NewNotification(
            id=uuid.uuid4(),
            user_id=user_id,
            type="GENERIC_INFO",
            message=f"{user_id} {i}",
            link_url=None,
            is_read=i % 2 == 0,
            created_at=start + timedelta(minutes=i),
        )
        for user_id, total in ((busy, 7), (quiet, 2))
        for i in range(total)
    ]
    try:
        db = store.create_sessionmaker(engine)
        async with db.begin() as session:
            await store.bump_versions(session, [row.user_id for row in rows])
            await store.insert_notifications(session, rows)
        frames = await notifications.snapshots(db, user_ids=[busy, quiet, empty], size=5)
    finally:
        await engine.dispose()

    def opening(user_id: str) -> tuple[list[str], dict[str, int]]:
        snapshot, count = (orjson.loads(event.frame) for event in frames[user_id])
        assert [snapshot["event"], count["event"]] == ["snapshot", "unread_count.updated"]
        return [item["message"] for item in snapshot["payload"]], count["payload"]

    assert opening(busy) == ([f"{busy} {i}" for i in (6, 5, 4, 3, 2)], {"count": 3})
    assert opening(quiet) == ([f"{quiet} 1", f"{quiet} 0"], {"count": 1})
    assert opening(empty) == ([], {"count": 0})
    assert [event.version for event in frames[busy]] == [7, 7]
    assert [event.version for event in frames[empty]] == [0, 0]
