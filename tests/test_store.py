"""The queries behind list, snapshot and unread count use their indexes on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from campana import migrations, store

from .conftest import DATABASES, database_url

Query = Callable[[AsyncSession], Awaitable[Any]]
QUERIES: dict[str, tuple[Query, str]] = {
    "unread-count": (lambda s: store.unread_count(s, "u"), "ix_notifications_user_unread"),
    "newest-first": (
        lambda s: store.list_notifications(s, "u", skip=0, limit=20),
        "ix_notifications_user_newest",
    ),
}


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("database", DATABASES)
async def test_query_uses_its_index(
    database_urls: dict[str, str], tmp_path: Path, database: str, query: str
) -> None:
    url = database_url(database_urls, database)
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'plan.sqlite3'}"
        await asyncio.to_thread(migrations.upgrade, url)
    engine = create_async_engine(url)
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
    url = database_url(database_urls, database)
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'versions.sqlite3'}"
        await asyncio.to_thread(migrations.upgrade, url)
    engine = create_async_engine(url)
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
