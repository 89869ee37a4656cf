"""Every query, nothing about sockets. Functions take an ``AsyncSession`` in a transaction."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    Table,
    any_,
    bindparam,
    delete,
    event,
    func,
    not_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from campana.models import IdempotencyRecord, Notification, UserVersion
from campana.settings import Settings

notifications = cast(Table, Notification.__table__)
user_versions = cast(Table, UserVersion.__table__)
idempotency_keys = cast(Table, IdempotencyRecord.__table__)

AnyRow: TypeAlias = Row[*tuple[Any, ...]]

ITEM_COLUMNS = (
    notifications.c.id,
    notifications.c.message,
    notifications.c.type,
    notifications.c.link_url,
    notifications.c.is_read,
    notifications.c.created_at,
)
NEWEST_FIRST = (notifications.c.created_at.desc(), notifications.c.id.desc())


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url
    if not settings.is_embedded_database:
        size = settings.database_pool_size
        return create_async_engine(url, pool_size=size, max_overflow=size, pool_pre_ping=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # SQLite has one writer; one pooled connection turns "database is locked" into a queue.
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def use_snapshot_isolation(session: AsyncSession) -> None:
    """Make every following read of the transaction see one instant (PostgreSQL).

    SQLite needs nothing: its single pooled connection lets no write in meanwhile.
    """
    if _dialect(session) == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _among(
    session: AsyncSession, column: ColumnElement[str], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL one array parameter, however many values."""
    if _dialect(session) == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
    return column.in_(values)


# Versions


async def bump_versions(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, int]:
    """Give each change its user's next version, holding the user's row lock to commit.

    A user named k times gets k consecutive versions; the answer is each user's last one.
    Rows are locked in sorted order so that two bulk creates cannot deadlock. Everything
    the transaction reads after this sees all earlier versions committed, which is what
    makes (version, unread count) pairs consistent.
    """
    # One row per user: PostgreSQL refuses an upsert that touches one key twice.
    changes = Counter(user_ids)
    if _dialect(session) == "postgresql":
        ordered = sorted(changes)
        result = await session.execute(
            _BUMP_VERSIONS_PG, {"user_ids": ordered, "steps": [changes[u] for u in ordered]}
        )
        return {user_id: version for user_id, version in result}
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    upsert = insert(user_versions)
    statement = upsert.on_conflict_do_update(
        index_elements=[user_versions.c.user_id],
        set_={"version": user_versions.c.version + upsert.excluded.version},
    ).returning(user_versions.c.user_id, user_versions.c.version)
    rows = await session.execute(
        statement,
        [{"user_id": user_id, "version": changes[user_id]} for user_id in sorted(changes)],
    )
    return {row.user_id: row.version for row in rows}


async def current_version(session: AsyncSession, user_id: str) -> int:
    version = await session.scalar(
        select(user_versions.c.version).where(user_versions.c.user_id == user_id)
    )
    return version or 0


async def current_versions(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, int]:
    versions = dict.fromkeys(user_ids, 0)
    result = await session.execute(
        select(user_versions.c.user_id, user_versions.c.version).where(
            _among(session, user_versions.c.user_id, user_ids)
        )
    )
    versions.update({user_id: version for user_id, version in result})
    return versions


async def newest_notifications(
    session: AsyncSession, user_ids: Sequence[str], limit: int
) -> dict[str, list[AnyRow]]:
    """Each user's ``limit`` newest items, newest first, for many users at once."""
    newest: dict[str, list[AnyRow]] = {user_id: [] for user_id in user_ids}
    if _dialect(session) != "postgresql":
        # SQLite has no LATERAL; queries on its one in-process connection are cheap.
        for user_id in newest:
            newest[user_id] = list(await list_notifications(session, user_id, skip=0, limit=limit))
        return newest
    # One index range scan of at most ``limit`` rows per user, however many items they have.
    wanted = (
        func.unnest(bindparam("user_ids", list(newest), type_=postgresql.ARRAY(String)))
        .table_valued("user_id")
        .render_derived("wanted")
    )
    per_user = (
        select(*ITEM_COLUMNS)
        .where(notifications.c.user_id == wanted.c.user_id)
        .order_by(*NEWEST_FIRST)
        .limit(limit)
        .lateral("newest")
    )
    result = await session.execute(
        select(wanted.c.user_id, per_user)
        .select_from(wanted)
        .join(per_user, true())
        .order_by(wanted.c.user_id, per_user.c.created_at.desc(), per_user.c.id.desc())
    )
    for row in result:
        newest[row.user_id].append(row)
    return newest


# Notifications


@dataclass(frozen=True, slots=True)
class NewNotification:
    id: uuid.UUID
    user_id: str
    type: str
    message: str
    link_url: str | None
    is_read: bool
    created_at: datetime


# PostgreSQL: whole columns as arrays, one statement however many rows (SQLAlchemy's
# executemany would send a statement of up to 1,000 rows with one parameter per value).
_BUMP_VERSIONS_PG = text(
    "INSERT INTO user_versions (user_id, version)"
    " SELECT * FROM unnest(CAST(:user_ids AS text[]), CAST(:steps AS bigint[]))"
    " ON CONFLICT (user_id) DO UPDATE SET version = user_versions.version + excluded.version"
    " RETURNING user_id, version"
)
_INSERT_NOTIFICATIONS_PG = text(
    "INSERT INTO notifications (id, user_id, type, message, link_url, is_read, created_at)"
    " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:user_ids AS text[]),"
    " CAST(:types AS text[]), CAST(:messages AS text[]), CAST(:links AS text[]),"
    " CAST(:reads AS boolean[]), CAST(:created AS timestamptz[]))"
)


async def insert_notifications(session: AsyncSession, rows: Sequence[NewNotification]) -> None:
    if _dialect(session) == "postgresql":
        await session.execute(
            _INSERT_NOTIFICATIONS_PG,
            {
                "ids": [row.id for row in rows],
                "user_ids": [row.user_id for row in rows],
                "types": [row.type for row in rows],
                "messages": [row.message for row in rows],
                "links": [row.link_url for row in rows],
                "reads": [row.is_read for row in rows],
                "created": [row.created_at for row in rows],
            },
        )
        return
    await session.execute(
        notifications.insert(),
        [
            {
                "id": row.id,
                "user_id": row.user_id,
                "type": row.type,
                "message": row.message,
                "link_url": row.link_url,
                "is_read": row.is_read,
                "created_at": row.created_at,
            }
            for row in rows
        ],
    )


async def list_notifications(
    session: AsyncSession, user_id: str, *, skip: int, limit: int
) -> Sequence[AnyRow]:
    result = await session.execute(
        select(*ITEM_COLUMNS)
        .where(notifications.c.user_id == user_id)
        .order_by(*NEWEST_FIRST)
        .offset(skip)
        .limit(limit)
    )
    return result.all()


async def find_notification(
    session: AsyncSession, user_id: str, notification_id: uuid.UUID
) -> AnyRow | None:
    result = await session.execute(
        select(*ITEM_COLUMNS).where(
            notifications.c.id == notification_id, notifications.c.user_id == user_id
        )
    )
    return result.first()


async def mark_read(
    session: AsyncSession, user_id: str, notification_id: uuid.UUID
) -> AnyRow | None:
    """The item if this call read it; ``None`` if it was already read, or is not the user's."""
    result = await session.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.user_id == user_id,
            not_(notifications.c.is_read),
        )
        .values(is_read=True)
        .returning(*ITEM_COLUMNS)
    )
    return result.first()


async def mark_all_read(session: AsyncSession, user_id: str) -> None:
    await session.execute(
        update(notifications)
        .where(notifications.c.user_id == user_id, not_(notifications.c.is_read))
        .values(is_read=True)
    )


async def unread_count(session: AsyncSession, user_id: str) -> int:
    counts = await unread_counts(session, [user_id])
    return counts[user_id]


# A join with the users' array, not `user_id = ANY(:array)`: right after a broadcast's
# insert, on a table whose statistics still say "small", PostgreSQL chose a sequential
# scan that tested each row against all 10,000 array elements (5 s instead of 25 ms).
_UNREAD_COUNTS_PG = text(
    "SELECT wanted.user_id, count(*) FROM unnest(CAST(:user_ids AS text[])) AS wanted(user_id)"
    " JOIN notifications ON notifications.user_id = wanted.user_id AND NOT notifications.is_read"
    " GROUP BY wanted.user_id"
)


async def unread_counts(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(user_ids, 0)
    if _dialect(session) == "postgresql":
        result = await session.execute(_UNREAD_COUNTS_PG, {"user_ids": list(counts)})
    else:
        result = await session.execute(
            select(notifications.c.user_id, func.count())
            .where(notifications.c.user_id.in_(user_ids), not_(notifications.c.is_read))
            .group_by(notifications.c.user_id)
        )
    counts.update({user_id: count for user_id, count in result})
    return counts


# Idempotency keys


async def find_idempotency_record(session: AsyncSession, producer: str, key: str) -> AnyRow | None:
    result = await session.execute(
        select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
            idempotency_keys.c.producer == producer, idempotency_keys.c.key == key
        )
    )
    return result.first()


async def save_idempotency_record(
    session: AsyncSession,
    *,
    producer: str,
    key: str,
    fingerprint: str,
    response: str,
    created_at: datetime,
) -> None:
    """Insert; a concurrent call with the same key makes this raise ``IntegrityError``."""
    await session.execute(
        idempotency_keys.insert().values(
            producer=producer,
            key=key,
            fingerprint=fingerprint,
            response=response,
            created_at=created_at,
        )
    )


async def purge_idempotency_records(session: AsyncSession, older_than: datetime) -> int:
    result = await session.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)
