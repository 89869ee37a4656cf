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
from alembic import command
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from campana import migrations, snapshots, store
from campana.protocol import frame_text
from campana.store import Action, Badge, NewNotification, View

from .support.servers import DATABASES, database_url

Query = Callable[[AsyncSession], Awaitable[Any]]
# The index each query must use; SQLite names a text primary key's index itself.
QUERIES: dict[str, tuple[Query, str | dict[str, str]]] = {
    "unread-count": (
        lambda s: store.unread_count(s, "u"),
        {"postgresql": "pk_user_versions", "sqlite": "sqlite_autoindex_user_versions_1"},
    ),
    "newest-first": (
        lambda s: store.list_notifications(s, "u", skip=0, limit=20),
        "ix_notifications_inbox",
    ),
    "cursor-page": (
        lambda s: store.list_notifications(
            s, "u", limit=21, before=(datetime.now(UTC), uuid.UUID(int=0))
        ),
        "ix_notifications_inbox",
    ),
    "newest-first-of-many-users": (
        lambda s: store.newest_notifications(s, ["u", "v"], 20),
        "ix_notifications_inbox",
    ),
    "unread-page": (
        lambda s: store.list_notifications(s, "u", limit=21, view=View(is_read=False)),
        "ix_notifications_unread_type",
    ),
    "unseen-page": (
        lambda s: store.list_notifications(s, "u", limit=21, view=View(is_seen=False)),
        "ix_notifications_unseen_type",
    ),
    "archived-page": (
        lambda s: store.list_notifications(s, "u", limit=21, view=View(archived=True)),
        "ix_notifications_archived_type",
    ),
    "types-page": (
        lambda s: store.list_notifications(
            s,
            "u",
            limit=21,
            before=(datetime.now(UTC), uuid.UUID(int=0)),
            view=View(types=("CAMPAIGN_ERROR", "CAMPAIGN_COMPLETED")),
        ),
        "ix_notifications_inbox_type",
    ),
    "unread-of-a-type-page": (
        lambda s: store.list_notifications(
            s, "u", limit=21, view=View(types=("CAMPAIGN_ERROR",), is_read=False)
        ),
        "ix_notifications_unread_type",
    ),
    "read-all-batch": (
        lambda s: _batch(s, Action.READ, View()),
        "ix_notifications_unread_type",
    ),
    "seen-all-batch": (
        lambda s: _batch(s, Action.SEEN, View()),
        "ix_notifications_unseen_type",
    ),
    "archive-all-batch": (
        lambda s: _batch(s, Action.ARCHIVE, View(types=("GENERIC_INFO",))),
        "ix_notifications_inbox_type",
    ),
    "delete-archived-batch": (
        lambda s: _batch(s, Action.DELETE, View(archived=True)),
        "ix_notifications_archived_type",
    ),
}


async def _batch(session: AsyncSession, action: Action, view: View) -> store.Batch:
    """A bulk change's batch past its first (a cursor), for a user with no such item: its
    last statement is the search (the transaction is never committed)."""
    await session.execute(
        text("INSERT INTO user_versions (user_id, version) VALUES ('u', 1) ON CONFLICT DO NOTHING")
    )
    after = ("GENERIC_INFO", datetime.now(UTC), uuid.UUID(int=0))
    return await store.change_batch(
        session, "u", action, view, up_to_version=10, after=after, limit=1000
    )


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

    run, expected = QUERIES[query]
    index = expected if isinstance(expected, str) else expected[database]
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
async def test_a_user_named_k_times_gets_k_consecutive_versions_and_its_unread_counted(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    """Creates sharing a transaction: the answer is each user's last version and count."""
    engine = await migrated_engine(database_urls, tmp_path, database)
    first, second = f"a-{tmp_path.name}", f"b-{tmp_path.name}"
    try:
        sessions = store.create_sessionmaker(engine)
        async with sessions.begin() as session:
            added = await store.add_notifications(session, new_rows([first, second, first]))
            assert _unread(added) == {first: (2, 2), second: (1, 1)}
        async with sessions.begin() as session:
            added = await store.add_notifications(
                session, new_rows([second, first, second, second], read=(1, 3))
            )
            assert _unread(added) == {first: (3, 2), second: (4, 3)}
            assert _unread({second: await store.badge(session, second)}) == {second: (4, 3)}
            assert await store.badge(session, "nobody-" + tmp_path.name) == store.NO_BADGE
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database", DATABASES)
async def test_versions_of_every_user_of_a_full_process_are_read_at_once(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    """The sweep asks for every user with a socket on the process: 50,000 at most by
    default, more than some SQLite builds bind in one statement."""
    engine = await migrated_engine(database_urls, tmp_path, database)
    known = f"known-{tmp_path.name}"
    try:
        sessions = store.create_sessionmaker(engine)
        async with sessions.begin() as session:
            await store.add_notifications(session, new_rows([known, known]))
        loader = snapshots.SnapshotLoader(sessions, size=20)
        users = [f"user-{i}-{tmp_path.name}" for i in range(50_000)] + [known]
        versions = await loader.versions(users)
        assert len(versions) == 50_001
        assert versions[known] == 2
        assert set(versions.values()) == {0, 2}
    finally:
        await engine.dispose()


def new_rows(user_ids: list[str], *, read: tuple[int, ...] = ()) -> list[NewNotification]:
    """One row per entry of ``user_ids``; the rows at the positions in ``read`` are read."""
    now = datetime.now(UTC)
    return [
        NewNotification(uuid.uuid4(), user_id, "GENERIC_INFO", "m", None, i in read, now)
        for i, user_id in enumerate(user_ids)
    ]


@pytest.mark.parametrize("database", DATABASES)
async def test_a_cursor_walks_items_of_one_instant_once_each_in_id_order(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    """Items created in one transaction share ``created_at``: the id breaks the tie, in
    the order and in the cursor alike."""
    engine = await migrated_engine(database_urls, tmp_path, database)
    user = f"tie-{tmp_path.name}"
    try:
        sessions = store.create_sessionmaker(engine)
        async with sessions.begin() as session:
            await store.add_notifications(session, new_rows([user] * 5, read=(1,)))
        async with sessions() as session:
            everything = await store.list_notifications(session, user, limit=10)
            walked: list[Any] = []
            before = None
            while page := await store.list_notifications(session, user, limit=2, before=before):
                walked += page
                before = (page[-1].created_at, page[-1].id)
            unread = await store.list_notifications(
                session, user, limit=10, view=View(is_read=False)
            )
    finally:
        await engine.dispose()
    assert len({row.created_at for row in everything}) == 1
    assert [row.id for row in walked] == [row.id for row in everything]
    assert len(walked) == 5
    assert [row.id for row in unread] == [row.id for row in everything if not row.is_read]
    assert len(unread) == 4


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
            await store.add_notifications(session, rows)
        frames = await snapshots.read_openings(db, user_ids=[busy, quiet, empty], size=5)
    finally:
        await engine.dispose()

    def opening(user_id: str) -> tuple[list[str], dict[str, int]]:
        snapshot, count, counts = (orjson.loads(frame_text(e)) for e in frames[user_id])
        assert [frame["event"] for frame in (snapshot, count, counts)] == [
            "snapshot",
            "unread_count.updated",
            "counts.updated",
        ]
        assert counts["payload"]["unread"] == count["payload"]["count"]
        return [item["message"] for item in snapshot["payload"]], count["payload"]

    assert opening(busy) == ([f"{busy} {i}" for i in (6, 5, 4, 3, 2)], {"count": 3})
    assert opening(quiet) == ([f"{quiet} 1", f"{quiet} 0"], {"count": 1})
    assert opening(empty) == ([], {"count": 0})
    assert [event.version for event in frames[busy]] == [7, 7, 7]
    assert [event.version for event in frames[empty]] == [0, 0, 0]


@pytest.mark.parametrize("database", DATABASES)
async def test_the_migration_counts_each_users_unread_items(
    database_urls: dict[str, str], tmp_path: Path, database: str
) -> None:
    """A database at the first migration gets each user's unread count from its rows.

    A user with items but no version row (never bumped) gets one; a user whose items
    are all read counts 0.
    """
    url = database_url(database_urls, database)
    name = f"campana_migration_{uuid.uuid4().hex[:8]}"
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    else:
        await _postgres_admin(url, f"CREATE DATABASE {name}")
        url = url.rsplit("/", 1)[0] + "/" + name
    try:
        await asyncio.to_thread(command.upgrade, migrations.alembic_config(url), "20261128_0001")
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("INSERT INTO user_versions (user_id, version) VALUES ('a', 3), ('c', 1)")
                )
                for user_id, kind, is_read in (
                    ("a", "GENERIC_INFO", True),
                    ("a", "CAMPAIGN_ERROR", False),
                    ("a", "GENERIC_INFO", False),
                    ("b", "CAMPAIGN_ERROR", False),
                    ("c", "GENERIC_INFO", True),
                ):
                    await connection.execute(
                        text(
                            "INSERT INTO notifications"
                            " (id, user_id, type, message, is_read, created_at)"
                            " VALUES (:id, :user_id, :type, 'm', :is_read, :created_at)"
                        ),
                        {
                            "id": uuid.uuid4().hex if database == "sqlite" else uuid.uuid4(),
                            "user_id": user_id,
                            "type": kind,
                            "is_read": is_read,
                            "created_at": datetime(2026, 1, 1)
                            if database == "sqlite"
                            else datetime(2026, 1, 1, tzinfo=UTC),
                        },
                    )
            await asyncio.to_thread(migrations.upgrade, url)
            async with store.create_sessionmaker(engine)() as session:
                found = await store.badges(session, ["a", "b", "c", "d"])
                items = await store.list_notifications(session, "a", limit=10)
        finally:
            await engine.dispose()
    finally:
        if database == "postgresql":
            await _postgres_admin(database_url(database_urls, database), f"DROP DATABASE {name}")
    assert _unread(found) == {"a": (3, 2), "b": (0, 1), "c": (1, 0), "d": (0, 0)}
    # Per type too; existing items count as seen, none is archived.
    assert found["a"].by_type()["GENERIC_INFO"] == (1, 0)
    assert found["a"].by_type()["CAMPAIGN_ERROR"] == (1, 0)
    assert found["b"].by_type()["CAMPAIGN_ERROR"] == (1, 0)
    assert {badge.unseen for badge in found.values()} == {0}
    assert [(row.is_seen, row.is_archived) for row in items] == [(True, False)] * 3


def _unread(badges: dict[str, Badge]) -> dict[str, tuple[int, int]]:
    """Each user's version and unread count."""
    return {user_id: (badge.version, badge.unread) for user_id, badge in badges.items()}


async def _postgres_admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()
