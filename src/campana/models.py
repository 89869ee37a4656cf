"""The tables. Every query lives in ``store.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, MetaData, String, Text, Uuid, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

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


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    link_url: Mapped[str | None] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # List and snapshot: one user's items, newest first, ties by id.
        Index("ix_notifications_user_newest", "user_id", text("created_at DESC"), text("id DESC")),
        # Unread pages and read-all: only unread rows are indexed, newest first.
        Index(
            "ix_notifications_user_unread",
            "user_id",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("NOT is_read"),
            sqlite_where=text("is_read = 0"),  # as SQLAlchemy renders `not_(is_read)` there
        ),
    )


class UserVersion(Base):
    """Per-user change counter and unread count; its row lock serialises a user's changes.

    Every change of a user's items takes this row's lock first, bumps ``version`` and
    keeps ``unread`` equal to the user's unread items in the same transaction, so the
    badge is one primary-key read however many items the user has.
    """

    __tablename__ = "user_versions"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    unread: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    # Room in each page for in-place (HOT) updates of these ever-rewritten rows.
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)


class IdempotencyRecord(Base):
    """A producer call's answer, kept so that a retry with the same key gets it again."""

    __tablename__ = "idempotency_keys"

    producer: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
