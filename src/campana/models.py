"""The tables. Every query lives in ``store.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeDecorator

from campana.schemas import NotificationType

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The inbox is what is not archived: the snapshot, the badge and every count are of it.
INBOX = text("NOT is_archived")
# Partial indexes' predicates as SQLAlchemy renders them on SQLite (`NOT x` is `x = 0`).
_SQLITE = {"NOT is_archived": "is_archived = 0", "is_archived": "is_archived = 1"}


def _newest_first(name: str, where: str, *, by_type: bool) -> Index:
    """One user's items matching ``where``, newest first; ``by_type``: each type apart.

    Type comes second, descending like the rest, so that a type's page is one range scan
    and a bulk change walks the index with one keyset cursor over (type, created_at, id).
    """
    columns: list[str | TextClause] = ["user_id", *([text("type DESC")] if by_type else [])]
    sqlite_where = " AND ".join(
        _SQLITE.get(part, part.replace("NOT ", "") + " = 0") for part in where.split(" AND ")
    )
    return Index(
        name,
        *columns,
        text("created_at DESC"),
        text("id DESC"),
        postgresql_where=text(where),
        sqlite_where=text(sqlite_where),
    )


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    link_url: Mapped[str | None] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    # A read item is always seen: reading marks it seen, marking it unread keeps it seen.
    is_seen: Mapped[bool] = mapped_column(Boolean, default=False)
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The user's version when the item was created: a bulk change bounded "up to" an item
    # touches only items committed with it or before, whatever their clocks said.
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        # The snapshot and the inbox's pages.
        _newest_first("ix_notifications_inbox", "NOT is_archived", by_type=False),
        # A view's page of one type (a page of several merges one range scan per type),
        # and the rows a bulk change walks: each state its own index, so that no page or
        # batch reads past items the filter does not want, whatever the user's history.
        _newest_first("ix_notifications_inbox_type", "NOT is_archived", by_type=True),
        _newest_first(
            "ix_notifications_unread_type", "NOT is_read AND NOT is_archived", by_type=True
        ),
        _newest_first(
            "ix_notifications_unseen_type", "NOT is_seen AND NOT is_archived", by_type=True
        ),
        _newest_first("ix_notifications_archived_type", "is_archived", by_type=True),
    )


COUNTED_TYPES: tuple[str, ...] = tuple(kind.value for kind in NotificationType)


def count_column(state: str, kind: str) -> str:
    """The ``user_versions`` column that counts the user's ``state`` (unread, unseen)
    inbox items of type ``kind``."""
    return f"{state}_{kind.lower()}"


COUNT_COLUMNS: tuple[str, ...] = (
    "unread",
    "unseen",
    *(count_column(state, kind) for kind in COUNTED_TYPES for state in ("unread", "unseen")),
)


class UserVersion(Base):
    """Per-user change counter and inbox counts; its row lock serialises a user's changes.

    Every change of a user's items takes this row's lock first, bumps ``version`` and
    keeps every count equal to the user's matching inbox items in the same transaction,
    so the badge and each count are one primary-key read however many items the user
    has. ``unread`` and ``unseen`` are the totals; ``unread_<type>`` and ``unseen_<type>``
    the same per type.
    """

    __tablename__ = "user_versions"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    unread: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unseen: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    # Room in each page for in-place (HOT) updates of these ever-rewritten rows.
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)


for _name in COUNT_COLUMNS[2:]:
    cast(Table, UserVersion.__table__).append_column(
        Column(_name, BigInteger, nullable=False, server_default=text("0"))
    )


class IdempotencyRecord(Base):
    """A producer call's answer, kept so that a retry with the same key gets it again."""

    __tablename__ = "idempotency_keys"

    producer: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
