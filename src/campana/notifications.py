"""Reads and read marks: each writes in one transaction, then publishes what changed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from campana import store
from campana.errors import NotificationNotFound
from campana.protocol import count_event, read_event
from campana.publisher import Publisher
from campana.schemas import NotificationItem
from campana.store import Database, needs_database


@needs_database
async def mark_read(
    db: Database, publisher: Publisher, *, user_id: str, notification_id: uuid.UUID
) -> NotificationItem:
    """Read one item. Events go out only when this call changed it."""
    async with db.begin() as session:
        changed = await store.mark_read(session, user_id, notification_id)
        if changed is None:
            unchanged = await store.find_notification(session, user_id, notification_id)
            if unchanged is None:
                raise NotificationNotFound()
            return NotificationItem.model_validate(unchanged)
    row, badge = changed
    committed_at = time.time()
    await publisher.publish(
        [
            read_event(user_id, badge.version, notification_id, committed_at),
            count_event(user_id, badge.version, badge.unread, committed_at),
        ],
    )
    return NotificationItem.model_validate(row)


@needs_database
async def mark_all_read(db: Database, publisher: Publisher, *, user_id: str) -> int:
    """Read everything; one ``unread_count.updated`` and no per-item events."""
    async with db.begin() as session:
        badge = await store.mark_all_read(session, user_id)
    await publisher.publish([count_event(user_id, badge.version, badge.unread, time.time())])
    return badge.unread


@dataclass(frozen=True, slots=True)
class Page:
    items: list[NotificationItem]
    has_more: bool  # older items match too: ask again with ``before`` the last item


@needs_database
async def list_notifications(
    db: Database,
    *,
    user_id: str,
    limit: int,
    skip: int = 0,
    before: uuid.UUID | None = None,
    is_read: bool | None = None,
    type_: str | None = None,
) -> Page:
    """A page of the user's items, newest first: older than ``before`` (the last item of
    the page before: the cursor), after skipping ``skip`` of them (the older way)."""
    async with db() as session:
        cursor = None
        if before is not None:
            cursor = await store.find_notification(session, user_id, before)
            if cursor is None:
                raise NotificationNotFound("before: no notification of yours has this id")
        rows = await store.list_notifications(
            session,
            user_id,
            skip=skip,
            limit=limit + 1,  # one more tells whether there is a next page
            before=None if cursor is None else (cursor.created_at, cursor.id),
            is_read=is_read,
            type_=type_,
        )
    items = [NotificationItem.model_validate(row) for row in rows[:limit]]
    return Page(items, has_more=len(rows) > limit)


@needs_database
async def unread_count(db: Database, *, user_id: str) -> int:
    async with db() as session:
        return await store.unread_count(session, user_id)
