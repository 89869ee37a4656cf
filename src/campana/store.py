"""Every query, nothing about sockets. Functions take an ``AsyncSession`` in a transaction."""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast

from sqlalchemy import (
    Row,
    Select,
    String,
    Table,
    bindparam,
    delete,
    event,
    func,
    not_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from campana.errors import DatabaseUnavailable
from campana.models import IdempotencyRecord, Notification, UserVersion
from campana.settings import Settings

notifications = cast(Table, Notification.__table__)
user_versions = cast(Table, UserVersion.__table__)
idempotency_keys = cast(Table, IdempotencyRecord.__table__)

AnyRow: TypeAlias = Row[*tuple[Any, ...]]
Database: TypeAlias = async_sessionmaker[AsyncSession]
_P = ParamSpec("_P")
_T = TypeVar("_T")

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
        timeout = settings.database_timeout_seconds
        engine = create_async_engine(
            url,
            pool_size=size,
            max_overflow=size,
            pool_timeout=timeout,
            # asyncpg's own limits: to connect, and for each query (it cancels the query).
            connect_args={"timeout": timeout, "command_timeout": timeout},
        )
        _check_idle_connections(engine)
        return engine
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


# A pooled connection that waited this long is checked before it is used: the server or
# a proxy may have dropped it meanwhile. One in steady use is not: SQLAlchemy's pre-ping
# checks every checkout with three round trips (BEGIN, an empty query, ROLLBACK on
# asyncpg), half of a create batch's six; a connection lost
# while in use is invalidated by the error its query raises (with every older one).
IDLE_CHECK_SECONDS = 1.0
_RETURNED_AT = "campana_returned_at"


def _check_idle_connections(engine: AsyncEngine) -> None:
    pool_events = engine.sync_engine
    dbapi_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(pool_events, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)  # none on a new connection
        if returned is None or time.monotonic() - returned < IDLE_CHECK_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except dbapi_error as error:
            # The pool replaces it (and every connection older) with a new one.
            raise InvalidatePoolError("a pooled connection was gone") from error


# PostgreSQL's answers that say "not now" rather than "wrong": connection exceptions
# (class 08), a server starting, stopping or crashed (57P01-57P03), too many clients.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_unavailable(error: BaseException) -> bool:
    """True if ``error`` says the database was not reached or did not answer in time.

    A refused or reset connection surfaces as ``OSError``, an asyncpg timeout as
    ``TimeoutError`` (an ``OSError`` too), a wait for a pooled connection as the pool's
    timeout, a connection lost in mid-query as a DBAPI error that invalidated it, and a
    server that refuses to start a session (restarting, full) by its SQLSTATE.
    """
    if isinstance(error, OSError | PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return error.connection_invalidated or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def create_sessionmaker(engine: AsyncEngine) -> Database:
    return async_sessionmaker(engine, expire_on_commit=False)


def needs_database(use_case: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """An unreachable or hung database is ``DatabaseUnavailable`` (503) for the caller."""

    @functools.wraps(use_case)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await use_case(*args, **kwargs)
        except Exception as error:
            if is_unavailable(error):
                raise DatabaseUnavailable() from error
            raise

    return call


async def use_snapshot_isolation(session: AsyncSession) -> None:
    """Make every following read of the transaction see one instant (PostgreSQL).

    SQLite needs nothing: its single pooled connection lets no write in meanwhile.
    """
    if _dialect(session).snapshot_isolation:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


# Versions and unread counters


@dataclass(frozen=True, slots=True)
class Badge:
    """A user's version and unread count, read or written together under its row lock."""

    version: int
    unread: int


NO_BADGE = Badge(version=0, unread=0)


# A join with the users' array, not `user_id = ANY(:array)`: on a table whose statistics
# still say "small", PostgreSQL has chosen a sequential scan testing each row against every
# array element (5 s instead of 25 ms for 10,000 users).
_BADGES_PG = text(
    "SELECT wanted.user_id, user_versions.version, user_versions.unread"
    " FROM unnest(CAST(:user_ids AS text[])) AS wanted(user_id)"
    " JOIN user_versions ON user_versions.user_id = wanted.user_id"
)


# SQLite binds each value of an IN list as a parameter of its own, and a build may cap a
# statement's parameters (32,766 by default; Debian's allows 250,000).
_SQLITE_IN_LIMIT = 10_000


async def badges(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, Badge]:
    """Each user's current version and unread count; a user never seen has 0 and 0."""
    found = dict.fromkeys(user_ids, NO_BADGE)
    rows = await _dialect(session).badge_rows(session, list(found))
    found.update({user_id: Badge(version, unread) for user_id, version, unread in rows})
    return found


async def _badge_rows_pg(session: AsyncSession, user_ids: list[str]) -> list[AnyRow]:
    return list(await session.execute(_BADGES_PG, {"user_ids": user_ids}))


async def _badge_rows_sqlite(session: AsyncSession, user_ids: list[str]) -> list[AnyRow]:
    columns = (user_versions.c.user_id, user_versions.c.version, user_versions.c.unread)
    rows: list[AnyRow] = []
    for start in range(0, len(user_ids), _SQLITE_IN_LIMIT):
        chunk = user_ids[start : start + _SQLITE_IN_LIMIT]
        rows += await session.execute(select(*columns).where(user_versions.c.user_id.in_(chunk)))
    return rows


async def badge(session: AsyncSession, user_id: str) -> Badge:
    return (await badges(session, [user_id]))[user_id]


async def unread_count(session: AsyncSession, user_id: str) -> int:
    return (await badge(session, user_id)).unread


async def _lock_user(session: AsyncSession, user_id: str) -> None:
    """Take the user's row lock first, as every change does, so that none can deadlock.

    SQLite needs nothing: its one pooled connection runs one transaction at a time.
    """
    await session.execute(
        select(user_versions.c.version).where(user_versions.c.user_id == user_id).with_for_update()
    )


async def newest_notifications(
    session: AsyncSession, user_ids: Sequence[str], limit: int
) -> dict[str, list[AnyRow]]:
    """Each user's ``limit`` newest items, newest first, for many users at once."""
    newest: dict[str, list[AnyRow]] = {user_id: [] for user_id in user_ids}
    await _dialect(session).newest(session, newest, limit)
    return newest


async def _newest_sqlite(
    session: AsyncSession, newest: dict[str, list[AnyRow]], limit: int
) -> None:
    # SQLite has no LATERAL; queries on its one in-process connection are cheap.
    for user_id in newest:
        newest[user_id] = list(await list_notifications(session, user_id, skip=0, limit=limit))


def _newest_statement_pg() -> Select[Any]:
    wanted = (
        func.unnest(bindparam("user_ids", type_=postgresql.ARRAY(String)))
        .table_valued("user_id")
        .render_derived("wanted")
    )
    per_user = (
        select(*ITEM_COLUMNS)
        .where(notifications.c.user_id == wanted.c.user_id)
        .order_by(*NEWEST_FIRST)
        .limit(bindparam("limit"))
        .lateral("newest")
    )
    return (
        select(wanted.c.user_id, per_user)
        .select_from(wanted)
        .join(per_user, true())
        .order_by(wanted.c.user_id, per_user.c.created_at.desc(), per_user.c.id.desc())
    )


# One index range scan of at most ``limit`` rows per user, however many items they have.
# Built once: making the statement cost more than running it for a small batch (a
# reconnect storm reads many).
_NEWEST_PG = _newest_statement_pg()


async def _newest_pg(session: AsyncSession, newest: dict[str, list[AnyRow]], limit: int) -> None:
    result = await session.execute(_NEWEST_PG, {"user_ids": list(newest), "limit": limit})
    for row in result:
        newest[row.user_id].append(row)


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


# PostgreSQL: one round trip. Whole columns go as arrays (SQLAlchemy's executemany would
# send up to 1,000 rows in a statement, one parameter per value), and both writes are
# parts of one statement: PostgreSQL runs every data-modifying WITH part exactly once.
_ADD_NOTIFICATIONS_PG = text(
    "WITH bumped AS ("
    " INSERT INTO user_versions (user_id, version, unread)"
    " SELECT * FROM unnest(CAST(:users AS text[]), CAST(:steps AS bigint[]),"
    " CAST(:unread AS bigint[]))"
    " ON CONFLICT (user_id) DO UPDATE SET version = user_versions.version + excluded.version,"
    " unread = user_versions.unread + excluded.unread"
    " RETURNING user_id, version, unread"
    "), added AS ("
    " INSERT INTO notifications (id, user_id, type, message, link_url, is_read, created_at)"
    " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:user_ids AS text[]),"
    " CAST(:types AS text[]), CAST(:messages AS text[]), CAST(:links AS text[]),"
    " CAST(:reads AS boolean[]), CAST(:created AS timestamptz[]))"
    ") SELECT user_id, version, unread FROM bumped"
)


async def add_notifications(
    session: AsyncSession, rows: Sequence[NewNotification]
) -> dict[str, Badge]:
    """Insert the rows; each user gets one version per row and its unread ones counted.

    A user with k rows gets k consecutive versions; the answer is each user's badge after
    its last one. User rows are locked in sorted order so that two bulk creates cannot
    deadlock, and stay locked to commit: no other change of the user's slips in between.
    """
    steps = Counter(row.user_id for row in rows)
    unread = Counter(row.user_id for row in rows if not row.is_read)
    users = sorted(steps)  # PostgreSQL refuses an upsert that touches one key twice
    return await _dialect(session).add(session, rows, users, steps, unread)


async def _add_pg(
    session: AsyncSession,
    rows: Sequence[NewNotification],
    users: list[str],
    steps: Counter[str],
    unread: Counter[str],
) -> dict[str, Badge]:
    result = await session.execute(
        _ADD_NOTIFICATIONS_PG,
        {
            "users": users,
            "steps": [steps[u] for u in users],
            "unread": [unread[u] for u in users],
            "ids": [row.id for row in rows],
            "user_ids": [row.user_id for row in rows],
            "types": [row.type for row in rows],
            "messages": [row.message for row in rows],
            "links": [row.link_url for row in rows],
            "reads": [row.is_read for row in rows],
            "created": [row.created_at for row in rows],
        },
    )
    return {user_id: Badge(version, count) for user_id, version, count in result}


async def _add_sqlite(
    session: AsyncSession,
    rows: Sequence[NewNotification],
    users: list[str],
    steps: Counter[str],
    unread: Counter[str],
) -> dict[str, Badge]:
    upsert = sqlite.insert(user_versions)
    bumped = await session.execute(
        upsert.on_conflict_do_update(
            index_elements=[user_versions.c.user_id],
            set_={
                "version": user_versions.c.version + upsert.excluded.version,
                "unread": user_versions.c.unread + upsert.excluded.unread,
            },
        ).returning(user_versions.c.user_id, user_versions.c.version, user_versions.c.unread),
        [{"user_id": u, "version": steps[u], "unread": unread[u]} for u in users],
    )
    # Read before the next statement: SQLite's cursor is the connection's.
    answer = {user_id: Badge(version, count) for user_id, version, count in bumped}
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
    return answer


async def list_notifications(
    session: AsyncSession,
    user_id: str,
    *,
    limit: int,
    skip: int = 0,
    before: tuple[datetime, uuid.UUID] | None = None,
    is_read: bool | None = None,
    type_: str | None = None,
) -> Sequence[AnyRow]:
    """A page of the user's items, newest first: after ``skip`` items, or older than the
    item ``before`` (keyset: one index range scan, stable while items are added)."""
    query = select(*ITEM_COLUMNS).where(notifications.c.user_id == user_id)
    if before is not None:
        query = query.where(
            tuple_(notifications.c.created_at, notifications.c.id) < tuple_(*before)
        )
    if is_read is not None:
        # Written as read-all writes it, so that unread pages use the partial index.
        query = query.where(notifications.c.is_read if is_read else not_(notifications.c.is_read))
    if type_ is not None:
        query = query.where(notifications.c.type == type_)
    result = await session.execute(query.order_by(*NEWEST_FIRST).offset(skip).limit(limit))
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
) -> tuple[AnyRow, Badge] | None:
    """The item and the user's new badge if this call read it.

    ``None`` if the item was already read, or is not the user's: nothing changed then.
    """
    await _lock_user(session, user_id)
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
    row = result.first()
    if row is None:
        return None
    bumped = await session.execute(
        update(user_versions)
        .where(user_versions.c.user_id == user_id)
        .values(version=user_versions.c.version + 1, unread=user_versions.c.unread - 1)
        .returning(user_versions.c.version, user_versions.c.unread)
    )
    version, unread = bumped.one()
    return row, Badge(version, unread)


async def mark_all_read(session: AsyncSession, user_id: str) -> Badge:
    """Read every item of the user: a new version, and 0 unread."""
    # The upsert takes the user's row lock before the update, as every change does.
    upsert = _dialect(session).insert(user_versions)
    bumped = await session.execute(
        upsert.values(user_id=user_id, version=1, unread=0)
        .on_conflict_do_update(
            index_elements=[user_versions.c.user_id],
            set_={"version": user_versions.c.version + 1, "unread": 0},
        )
        .returning(user_versions.c.version)
    )
    version = bumped.scalar_one()
    await session.execute(
        update(notifications)
        .where(notifications.c.user_id == user_id, not_(notifications.c.is_read))
        .values(is_read=True)
    )
    return Badge(version, 0)


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


# PostgreSQL and SQLite: where they differ, each has its variant, chosen once per call.


@dataclass(frozen=True, slots=True)
class _Dialect:
    # True where reads of one transaction must be told to see one instant.
    snapshot_isolation: bool
    badge_rows: Callable[[AsyncSession, list[str]], Awaitable[list[AnyRow]]]
    newest: Callable[[AsyncSession, dict[str, list[AnyRow]], int], Awaitable[None]]
    add: Callable[
        [AsyncSession, Sequence[NewNotification], list[str], Counter[str], Counter[str]],
        Awaitable[dict[str, Badge]],
    ]
    insert: Callable[[Table], Any]  # an INSERT that knows ON CONFLICT


_DIALECTS = {
    "postgresql": _Dialect(True, _badge_rows_pg, _newest_pg, _add_pg, postgresql.insert),
    "sqlite": _Dialect(False, _badge_rows_sqlite, _newest_sqlite, _add_sqlite, sqlite.insert),
}


def _dialect(session: AsyncSession) -> _Dialect:
    return _DIALECTS[session.get_bind().dialect.name]
