"""Every query, nothing about sockets. Functions take an ``AsyncSession`` in a transaction."""

from __future__ import annotations

import enum
import functools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
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
    union_all,
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
from campana.models import (
    COUNT_COLUMNS,
    COUNTED_TYPES,
    IdempotencyRecord,
    Notification,
    UserVersion,
    count_column,
)
from campana.schemas import ItemPayload, counts_by_type, counts_payload_of
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
    notifications.c.is_seen,
    notifications.c.is_archived,
    notifications.c.created_at,
)
NEWEST_FIRST = (notifications.c.created_at.desc(), notifications.c.id.desc())
# Written as the partial indexes' predicates are, so that both databases use them.
IN_INBOX = not_(notifications.c.is_archived)
COUNTS = tuple(user_versions.c[name] for name in COUNT_COLUMNS)


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
    """A user's version and inbox counts, read or written together under its row lock.

    ``counts`` are the values of ``models.COUNT_COLUMNS``, in that order: the unread and
    unseen totals, then unread and unseen per type.
    """

    version: int
    counts: tuple[int, ...]

    @property
    def unread(self) -> int:
        return self.counts[0]

    @property
    def unseen(self) -> int:
        return self.counts[1]

    def by_type(self) -> dict[str, tuple[int, int]]:
        """Each type's (unread, unseen)."""
        return counts_by_type(self.counts)

    def counts_payload(self) -> ItemPayload:
        """What ``counts.updated`` and ``GET /counts`` say."""
        return counts_payload_of(self.counts)


NO_BADGE = Badge(version=0, counts=(0,) * len(COUNT_COLUMNS))
# Where each type's unread count is in ``Badge.counts`` (its unseen count follows).
_TYPE_SLOT = {kind: 2 + 2 * i for i, kind in enumerate(COUNTED_TYPES)}


def count_delta() -> list[int]:
    return [0] * len(COUNT_COLUMNS)


def add_to_counts(
    delta: list[int], kind: str, *, is_read: bool, is_seen: bool, is_archived: bool, sign: int
) -> None:
    """Add (``sign`` positive) or take away (negative) what ``abs(sign)`` items in this
    state count for."""
    if is_archived:
        return  # counts are of the inbox
    slot = _TYPE_SLOT[kind]
    if not is_read:
        delta[0] += sign
        delta[slot] += sign
    if not is_seen:
        delta[1] += sign
        delta[slot + 1] += sign


# A join with the users' array, not `user_id = ANY(:array)`: on a table whose statistics
# still say "small", PostgreSQL has chosen a sequential scan testing each row against every
# array element (5 s instead of 25 ms for 10,000 users).
# Column names are the model's own (``COUNT_COLUMNS``), never input.
_BADGES_PG = text(
    "SELECT wanted.user_id, user_versions.version, "  # noqa: S608
    + ", ".join(f"user_versions.{name}" for name in COUNT_COLUMNS)
    + " FROM unnest(CAST(:user_ids AS text[])) AS wanted(user_id)"
    " JOIN user_versions ON user_versions.user_id = wanted.user_id"
)


# SQLite binds each value of an IN list as a parameter of its own, and a build may cap a
# statement's parameters (32,766 by default; Debian's allows 250,000).
_SQLITE_IN_LIMIT = 10_000


async def badges(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, Badge]:
    """Each user's current version and unread count; a user never seen has 0 and 0."""
    found = dict.fromkeys(user_ids, NO_BADGE)
    rows = await _dialect(session).badge_rows(session, list(found))
    found.update({row[0]: Badge(row[1], tuple(row[2:])) for row in rows})
    return found


async def _badge_rows_pg(session: AsyncSession, user_ids: list[str]) -> list[AnyRow]:
    return list(await session.execute(_BADGES_PG, {"user_ids": user_ids}))


async def _badge_rows_sqlite(session: AsyncSession, user_ids: list[str]) -> list[AnyRow]:
    columns = (user_versions.c.user_id, user_versions.c.version, *COUNTS)
    rows: list[AnyRow] = []
    for start in range(0, len(user_ids), _SQLITE_IN_LIMIT):
        chunk = user_ids[start : start + _SQLITE_IN_LIMIT]
        rows += await session.execute(select(*columns).where(user_versions.c.user_id.in_(chunk)))
    return rows


async def badge(session: AsyncSession, user_id: str) -> Badge:
    return (await badges(session, [user_id]))[user_id]


async def unread_count(session: AsyncSession, user_id: str) -> int:
    return (await badge(session, user_id)).unread


async def _lock_user(session: AsyncSession, user_id: str) -> bool:
    """Take the user's row lock first, as every change does, so that none can deadlock.

    SQLite needs nothing: its one pooled connection runs one transaction at a time.
    """
    locked = await session.execute(
        select(user_versions.c.version).where(user_versions.c.user_id == user_id).with_for_update()
    )
    return locked.first() is not None


async def _bump(session: AsyncSession, user_id: str, delta: Sequence[int]) -> Badge:
    """The user's next version, with ``delta`` added to its counts (a locked user)."""
    values: dict[str, Any] = {"version": user_versions.c.version + 1}
    for column, change in zip(COUNTS, delta, strict=True):
        if change:
            values[column.name] = column + change
    bumped = await session.execute(
        update(user_versions)
        .where(user_versions.c.user_id == user_id)
        .values(values)
        .returning(user_versions.c.version, *COUNTS)
    )
    row = bumped.one()
    return Badge(row[0], tuple(row[1:]))


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
        newest[user_id] = list(await list_notifications(session, user_id, limit=limit))


def _newest_statement_pg() -> Select[Any]:
    wanted = (
        func.unnest(bindparam("user_ids", type_=postgresql.ARRAY(String)))
        .table_valued("user_id")
        .render_derived("wanted")
    )
    per_user = (
        select(*ITEM_COLUMNS)
        .where(notifications.c.user_id == wanted.c.user_id, IN_INBOX)
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
    is_archived: bool = False

    @property
    def is_seen(self) -> bool:
        return self.is_read  # a new item is seen only when it is created read


def _versions_behind(rows: Sequence[NewNotification]) -> list[int]:
    """Each row's distance from its user's last row: its version is that many before the
    version the user ends at."""
    remaining = Counter(row.user_id for row in rows)
    behind: list[int] = []
    for row in rows:
        remaining[row.user_id] -= 1
        behind.append(remaining[row.user_id])
    return behind


def _creation_counts(rows: Sequence[NewNotification]) -> dict[str, list[int]]:
    """What each user's rows add to its counts, users in sorted order."""
    deltas: dict[str, list[int]] = {}
    for row in sorted(rows, key=lambda row: row.user_id):
        delta = deltas.get(row.user_id)
        if delta is None:
            delta = deltas[row.user_id] = count_delta()
        add_to_counts(
            delta,
            row.type,
            is_read=row.is_read,
            is_seen=row.is_seen,
            is_archived=row.is_archived,
            sign=1,
        )
    return deltas


# A new item is seen when it is read (``NewNotification.is_seen``): it adds as much to the
# unseen counts as to the unread ones, what it adds to its type's, and only in the inbox.
_NEW_UNREAD = "NOT is_read AND NOT is_archived"
_NEW_COUNTS = {
    "unread": "counted",
    "unseen": "counted",
    **{
        count_column(state, kind): f"counted_{kind.lower()}"
        for kind in COUNTED_TYPES
        for state in ("unread", "unseen")
    },
}

# PostgreSQL: one round trip. Whole columns go as arrays (SQLAlchemy's executemany would
# send up to 1,000 rows in a statement, one parameter per value), and both writes are
# parts of one statement: PostgreSQL runs every data-modifying WITH part exactly once.
# What each user's rows add to its counts is summed there (the rows are in the statement
# already; sixteen arrays of counts, mostly zeros, cost more to send than to sum). Users
# are written in the database's order of their ids, the same for every create, so two
# creates lock their rows in one order (nothing else locks several users); the items
# take their versions from the user rows the first write returned.
_ADD_NOTIFICATIONS_PG = text(
    "WITH new AS MATERIALIZED ("  # noqa: S608
    " SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:user_ids AS text[]),"
    " CAST(:types AS text[]), CAST(:messages AS text[]), CAST(:links AS text[]),"
    " CAST(:reads AS boolean[]), CAST(:archived AS boolean[]),"
    " CAST(:created AS timestamptz[]), CAST(:behind AS bigint[]))"
    " AS new(id, user_id, type, message, link_url, is_read, is_archived, created_at, behind)"
    "), added_up AS ("
    f" SELECT user_id, count(*) AS steps, count(*) FILTER (WHERE {_NEW_UNREAD}) AS counted, "
    + ", ".join(
        f"count(*) FILTER (WHERE {_NEW_UNREAD} AND type = '{kind}') AS counted_{kind.lower()}"
        for kind in COUNTED_TYPES
    )
    + " FROM new GROUP BY user_id"
    "), bumped AS ("
    " INSERT INTO user_versions (user_id, version, "
    + ", ".join(COUNT_COLUMNS)
    + ") SELECT user_id, steps, "
    + ", ".join(_NEW_COUNTS[name] for name in COUNT_COLUMNS)
    + " FROM added_up ORDER BY user_id"
    " ON CONFLICT (user_id) DO UPDATE SET version = user_versions.version + excluded.version, "
    + ", ".join(f"{name} = user_versions.{name} + excluded.{name}" for name in COUNT_COLUMNS)
    + " RETURNING user_id, version, "
    + ", ".join(COUNT_COLUMNS)
    + "), added AS ("
    " INSERT INTO notifications (id, user_id, type, message, link_url, is_read, is_seen,"
    " is_archived, created_at, version)"
    " SELECT new.id, new.user_id, new.type, new.message, new.link_url, new.is_read,"
    " new.is_read, new.is_archived, new.created_at, bumped.version - new.behind"
    " FROM new JOIN bumped ON bumped.user_id = new.user_id"
    ") SELECT user_id, version, " + ", ".join(COUNT_COLUMNS) + " FROM bumped"
)


async def add_notifications(
    session: AsyncSession, rows: Sequence[NewNotification]
) -> dict[str, Badge]:
    """Insert the rows; each user gets one version per row and its counts moved.

    A user with k rows gets k consecutive versions, each row its own, in row order; the
    answer is each user's badge after its last one. User rows are locked in sorted order
    so that two bulk creates cannot deadlock, and stay locked to commit: no other change
    of the user's slips in between.
    """
    return await _dialect(session).add(session, rows)


async def _add_pg(session: AsyncSession, rows: Sequence[NewNotification]) -> dict[str, Badge]:
    result = await session.execute(
        _ADD_NOTIFICATIONS_PG,
        {
            "ids": [row.id for row in rows],
            "user_ids": [row.user_id for row in rows],
            "types": [row.type for row in rows],
            "messages": [row.message for row in rows],
            "links": [row.link_url for row in rows],
            "reads": [row.is_read for row in rows],
            "archived": [row.is_archived for row in rows],
            "created": [row.created_at for row in rows],
            "behind": _versions_behind(rows),
        },
    )
    return {row[0]: Badge(row[1], tuple(row[2:])) for row in result}


async def _add_sqlite(session: AsyncSession, rows: Sequence[NewNotification]) -> dict[str, Badge]:
    deltas = _creation_counts(rows)
    steps = Counter(row.user_id for row in rows)
    upsert = sqlite.insert(user_versions)
    bumped = await session.execute(
        upsert.on_conflict_do_update(
            index_elements=[user_versions.c.user_id],
            set_={
                "version": user_versions.c.version + upsert.excluded.version,
                **{column.name: column + upsert.excluded[column.name] for column in COUNTS},
            },
        ).returning(user_versions.c.user_id, user_versions.c.version, *COUNTS),
        [
            {"user_id": u, "version": steps[u], **dict(zip(COUNT_COLUMNS, deltas[u], strict=True))}
            for u in deltas
        ],
    )
    # Read before the next statement: SQLite's cursor is the connection's.
    answer = {row[0]: Badge(row[1], tuple(row[2:])) for row in bumped}
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
                "is_seen": row.is_seen,
                "is_archived": row.is_archived,
                "created_at": row.created_at,
                "version": answer[row.user_id].version - distance,
            }
            for row, distance in zip(rows, _versions_behind(rows), strict=True)
        ],
    )
    return answer


@dataclass(frozen=True, slots=True)
class View:
    """Which of a user's items a page or a bulk change is about.

    ``archived`` picks the view (the inbox, or the archived items); the others narrow it:
    ``None`` wants any.
    """

    archived: bool = False
    types: tuple[str, ...] | None = None
    is_read: bool | None = None
    is_seen: bool | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """Written as the partial indexes' predicates are, so that both databases use them."""
        c = notifications.c
        wanted = [c.is_archived if self.archived else not_(c.is_archived)]
        if self.is_read is not None:
            wanted.append(c.is_read if self.is_read else not_(c.is_read))
        if self.is_seen is not None:
            wanted.append(c.is_seen if self.is_seen else not_(c.is_seen))
        return wanted

    @property
    def scans_the_inbox(self) -> bool:
        """Served by the inbox's index alone: every type, no state asked for that has an
        index of its own. (Read or seen items only are the inbox less its unread or unseen
        ones: such a page reads past those.)"""
        return (
            not self.archived
            and self.types is None
            and self.is_read is not False
            and self.is_seen is not False
        )


INBOX = View()


async def list_notifications(
    session: AsyncSession,
    user_id: str,
    *,
    limit: int,
    skip: int = 0,
    before: tuple[datetime, uuid.UUID] | None = None,
    view: View = INBOX,
) -> Sequence[AnyRow]:
    """A page of the user's items in ``view``, newest first: after ``skip`` items, or
    older than the item ``before`` (keyset: index range scans, stable while items are
    added).

    The inbox as a whole is one range scan of its index. Any narrower view is one range
    scan per type, each of its state's index (one type, or every type), merged: no scan
    reads past an item the view does not want, however many the user has.
    """
    conditions = [notifications.c.user_id == user_id, *view.conditions()]
    if before is not None:
        conditions.append(tuple_(notifications.c.created_at, notifications.c.id) < tuple_(*before))
    if view.scans_the_inbox:
        query = select(*ITEM_COLUMNS).where(*conditions).order_by(*NEWEST_FIRST)
        result = await session.execute(query.offset(skip).limit(limit))
        return result.all()
    branches = [
        select(*ITEM_COLUMNS)
        .where(*conditions, notifications.c.type == kind)
        .order_by(*NEWEST_FIRST)
        .limit(skip + limit)
        .subquery()
        for kind in (view.types if view.types is not None else COUNTED_TYPES)
    ]
    if len(branches) == 1:
        merged = branches[0]
    else:
        merged = union_all(*(select(branch) for branch in branches)).subquery()
    query = select(merged).order_by(merged.c.created_at.desc(), merged.c.id.desc())
    result = await session.execute(query.offset(skip).limit(limit))
    return result.all()


async def find_notification(
    session: AsyncSession, user_id: str, notification_id: uuid.UUID
) -> AnyRow | None:
    result = await session.execute(
        select(*ITEM_COLUMNS, notifications.c.version).where(
            notifications.c.id == notification_id, notifications.c.user_id == user_id
        )
    )
    return result.first()


class Action(enum.Enum):
    """A change of an item's state by its user."""

    READ = "read"
    UNREAD = "unread"
    SEEN = "seen"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    DELETE = "delete"

    def changes(self) -> ColumnElement[bool]:
        """True of the items this action changes (the others it leaves as they are)."""
        c = notifications.c
        return {
            Action.READ: not_(c.is_read),
            Action.UNREAD: c.is_read,
            Action.SEEN: not_(c.is_seen),
            Action.ARCHIVE: not_(c.is_archived),
            Action.UNARCHIVE: c.is_archived,
            Action.DELETE: true(),
        }[self]

    @property
    def values(self) -> dict[str, bool]:
        """What the action writes (nothing: the row goes)."""
        return _ACTION_VALUES[self]


_ACTION_VALUES = {
    Action.READ: {"is_read": True, "is_seen": True},  # a read item is seen
    Action.UNREAD: {"is_read": False},
    Action.SEEN: {"is_seen": True},
    Action.ARCHIVE: {"is_archived": True},
    Action.UNARCHIVE: {"is_archived": False},
    Action.DELETE: {},
}


def _move_counts(
    delta: list[int], row: Any, values: dict[str, bool], *, deleted: bool, items: int = 1
) -> None:
    """What ``items`` items in ``row``'s state stop counting for, and, changed by
    ``values``, start counting for."""
    state = {"is_read": row.is_read, "is_seen": row.is_seen, "is_archived": row.is_archived}
    add_to_counts(delta, row.type, **state, sign=-items)
    if not deleted:
        add_to_counts(delta, row.type, **{**state, **values}, sign=items)


@dataclass(frozen=True, slots=True)
class ItemChange:
    item: dict[str, Any]  # its state after the change; the last one it had, when deleted
    badge: Badge | None  # the user's after the change; None when nothing changed
    unread_moved: bool = False


async def change_notification(
    session: AsyncSession, user_id: str, notification_id: uuid.UUID, action: Action
) -> ItemChange | None:
    """Apply ``action`` to one item of the user; ``None`` if the user has no such item."""
    if not await _lock_user(session, user_id):
        return None  # no item was ever created for the user
    row = await find_notification(session, user_id, notification_id)
    if row is None:
        return None
    item = {column.name: getattr(row, column.name) for column in ITEM_COLUMNS}
    values = action.values
    deleted = action is Action.DELETE
    if not deleted and all(item[name] == value for name, value in values.items()):
        return ItemChange(item, None)
    where = (notifications.c.id == notification_id, notifications.c.user_id == user_id)
    if deleted:
        await session.execute(delete(notifications).where(*where))
    else:
        await session.execute(update(notifications).where(*where).values(values))
        item.update(values)
    delta = count_delta()
    _move_counts(delta, row, values, deleted=deleted)
    return ItemChange(item, await _bump(session, user_id, delta), unread_moved=delta[0] != 0)


@dataclass(frozen=True, slots=True)
class Batch:
    changed: int
    badge: Badge | None  # the user's after the batch; None when it changed nothing
    # Where the next batch starts (type, created_at, id of this one's last); None: done.
    resume_after: tuple[str, datetime, uuid.UUID] | None
    unread_moved: bool = False


async def change_batch(
    session: AsyncSession,
    user_id: str,
    action: Action,
    view: View,
    *,
    up_to_version: int,
    after: tuple[str, datetime, uuid.UUID] | None,
    limit: int,
) -> Batch:
    """Apply ``action`` to at most ``limit`` of the user's items in ``view`` created at
    ``up_to_version`` or before, walking the view's index from ``after``: one batch of
    a bulk change, one transaction, a new version if it changed anything."""
    if not await _lock_user(session, user_id):
        return Batch(0, None, None)
    c = notifications.c
    conditions = [
        c.user_id == user_id,
        *view.conditions(),
        action.changes(),
        c.version <= up_to_version,
    ]
    if view.types is not None:
        conditions.append(c.type.in_(view.types))
    if after is not None:
        conditions.append(tuple_(c.type, c.created_at, c.id) < tuple_(*after))
    batch = (
        select(c.id, c.type, c.created_at, c.is_read, c.is_seen, c.is_archived)
        .where(*conditions)
        .order_by(c.type.desc(), c.created_at.desc(), c.id.desc())
        .limit(limit)
    )
    groups, last = await _dialect(session).change_rows(session, batch, action)
    if not groups:
        return Batch(0, None, None)
    values = action.values
    deleted = action is Action.DELETE
    delta = count_delta()
    changed = 0
    for group in groups:
        _move_counts(delta, group, values, deleted=deleted, items=group.items)
        changed += group.items
    badge = await _bump(session, user_id, delta)
    resume_after = last if changed == limit else None
    return Batch(changed, badge, resume_after, unread_moved=delta[0] != 0)


Groups: TypeAlias = tuple[list[AnyRow], tuple[str, datetime, uuid.UUID] | None]
_GROUPED = ("type", "is_read", "is_seen", "is_archived")


async def _change_rows_pg(session: AsyncSession, batch: Select[Any], action: Action) -> Groups:
    """One statement: the batch's rows found, changed and counted by state in PostgreSQL;
    only a few groups (and the cursor) come back, not the rows."""
    found = batch.cte("batch")
    c = notifications.c
    if action is Action.DELETE:
        write: Any = delete(notifications).where(c.id == found.c.id)
    else:
        write = update(notifications).where(c.id == found.c.id).values(action.values)
    # The states they had: the batch's columns, read before the write.
    written = write.returning(*(found.c[name] for name in _GROUPED)).cte("written")
    groups = (
        select(*(written.c[name] for name in _GROUPED), func.count().label("items"))
        .group_by(*(written.c[name] for name in _GROUPED))
        .cte("groups")
    )
    last = (
        select(found.c.type, found.c.created_at, found.c.id)
        .order_by(found.c.type, found.c.created_at, found.c.id)
        .limit(1)
        .subquery("last")
    )
    rows = (
        await session.execute(
            select(
                groups,
                last.c.type.label("last_type"),
                last.c.created_at.label("last_created_at"),
                last.c.id.label("last_id"),
            ).select_from(groups.join(last, true()))
        )
    ).all()
    if not rows:
        return [], None
    first = rows[0]
    return list(rows), (first.last_type, first.last_created_at, first.last_id)


async def _change_rows_sqlite(session: AsyncSession, batch: Select[Any], action: Action) -> Groups:
    # In-process: the rows come back cheaply, and the write names them.
    rows = (await session.execute(batch)).all()
    if not rows:
        return [], None
    ids = [row.id for row in rows]
    c = notifications.c
    if action is Action.DELETE:
        await session.execute(delete(notifications).where(c.id.in_(ids)))
    else:
        await session.execute(update(notifications).where(c.id.in_(ids)).values(action.values))
    groups = Counter((row.type, row.is_read, row.is_seen, row.is_archived) for row in rows)
    grouped = [_Group(*state, items) for state, items in groups.items()]
    last = rows[-1]
    return cast(list[AnyRow], grouped), (last.type, last.created_at, last.id)


@dataclass(frozen=True, slots=True)
class _Group:
    type: str
    is_read: bool
    is_seen: bool
    is_archived: bool
    items: int


async def mark_version(session: AsyncSession, user_id: str) -> Badge:
    """A new version for the user, counts as they are: a change that ends without
    changing more items (a bulk change whose last batch found none)."""
    await _lock_user(session, user_id)
    return await _bump(session, user_id, count_delta())


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
    add: Callable[[AsyncSession, Sequence[NewNotification]], Awaitable[dict[str, Badge]]]
    insert: Callable[[Table], Any]  # an INSERT that knows ON CONFLICT
    change_rows: Callable[[AsyncSession, Select[Any], Action], Awaitable[Groups]]


_DIALECTS = {
    "postgresql": _Dialect(
        True, _badge_rows_pg, _newest_pg, _add_pg, postgresql.insert, _change_rows_pg
    ),
    "sqlite": _Dialect(
        False, _badge_rows_sqlite, _newest_sqlite, _add_sqlite, sqlite.insert, _change_rows_sqlite
    ),
}


def _dialect(session: AsyncSession) -> _Dialect:
    return _DIALECTS[session.get_bind().dialect.name]
