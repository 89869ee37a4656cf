"""The use cases: each writes in one transaction, then publishes what changed."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from campana import metrics, store
from campana.broker import Broker
from campana.errors import IdempotencyConflict, InvalidRequest, NotificationNotFound
from campana.schemas import (
    SNAPSHOT,
    Event,
    NotificationCreate,
    NotificationItem,
    count_event,
    created_event,
    encode_frame,
    item_payload,
    read_event,
)

logger = logging.getLogger(__name__)

Database = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Created:
    items: list[NotificationItem]
    replayed: bool


async def create_notifications(
    db: Database,
    broker: Broker,
    *,
    producer: str,
    request: NotificationCreate,
    idempotency_key: str | None,
    max_recipients: int,
) -> Created:
    """Create one item per recipient, all or none, then announce each to its owner."""
    if len(request.recipients) > max_recipients:
        raise InvalidRequest(f"at most {max_recipients} recipients in one call")
    key = _idempotency_key(idempotency_key, request.idempotency_key)
    fingerprint = hashlib.sha256(request.fingerprint()).hexdigest()
    if key is not None:
        async with db() as session:
            replay = await _replay(session, producer, key, fingerprint)
        if replay is not None:
            return replay

    now = datetime.now(UTC)
    rows = [
        store.NewNotification(
            id=uuid.uuid4(),
            user_id=user_id,
            type=request.type.value,
            message=request.message,
            link_url=request.link_url,
            is_read=False,
            created_at=now,
        )
        for user_id in request.recipients
    ]
    items = [NotificationItem.model_validate(row) for row in rows]
    try:
        async with db.begin() as session:
            if key is not None:
                # First, so that a concurrent retry with the same key fails before any work.
                await store.save_idempotency_record(
                    session,
                    producer=producer,
                    key=key,
                    fingerprint=fingerprint,
                    response=orjson.dumps([item_payload(item) for item in items]).decode(),
                    created_at=now,
                )
            versions = await store.bump_versions(session, request.recipients)
            await store.insert_notifications(session, rows)
            counts = await store.unread_counts(session, request.recipients)
    except IntegrityError:
        if key is None:
            raise
        async with db() as session:
            replay = await _replay(session, producer, key, fingerprint)
        if replay is None:
            raise
        return replay

    events: list[Event] = []
    committed_at = time.time()
    for row, item in zip(rows, items, strict=True):
        version = versions[row.user_id]
        events.append(created_event(row.user_id, version, item, committed_at))
        events.append(count_event(row.user_id, version, counts[row.user_id], committed_at))
    await _publish(broker, events)
    return Created(items=items, replayed=False)


def _idempotency_key(header: str | None, body: str | None) -> str | None:
    if header is not None and body is not None and header != body:
        raise InvalidRequest("Idempotency-Key header and idempotency_key field differ")
    key = header if header is not None else body
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters")
    return key


async def _replay(
    session: AsyncSession, producer: str, key: str, fingerprint: str
) -> Created | None:
    record = await store.find_idempotency_record(session, producer, key)
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyConflict()
    items = [NotificationItem.model_validate(item) for item in orjson.loads(record.response)]
    return Created(items=items, replayed=True)


async def mark_read(
    db: Database, broker: Broker, *, user_id: str, notification_id: uuid.UUID
) -> NotificationItem:
    """Read one item. Events go out only when this call changed it."""
    async with db.begin() as session:
        row = await store.mark_read(session, user_id, notification_id)
        if row is None:
            unchanged = await store.find_notification(session, user_id, notification_id)
            if unchanged is None:
                raise NotificationNotFound()
            return NotificationItem.model_validate(unchanged)
        version = (await store.bump_versions(session, [user_id]))[user_id]
        count = await store.unread_count(session, user_id)
    committed_at = time.time()
    await _publish(
        broker,
        [
            read_event(user_id, version, notification_id, committed_at),
            count_event(user_id, version, count, committed_at),
        ],
    )
    return NotificationItem.model_validate(row)


async def mark_all_read(db: Database, broker: Broker, *, user_id: str) -> int:
    """Read everything; one ``unread_count.updated`` and no per-item events."""
    async with db.begin() as session:
        # The version row is locked before the update, so no create can slip in between.
        version = (await store.bump_versions(session, [user_id]))[user_id]
        await store.mark_all_read(session, user_id)
    await _publish(broker, [count_event(user_id, version, 0, time.time())])
    return 0


async def list_notifications(
    db: Database, *, user_id: str, skip: int, limit: int
) -> list[NotificationItem]:
    async with db() as session:
        rows = await store.list_notifications(session, user_id, skip=skip, limit=limit)
    return [NotificationItem.model_validate(row) for row in rows]


async def unread_count(db: Database, *, user_id: str) -> int:
    async with db() as session:
        return await store.unread_count(session, user_id)


async def snapshot(db: Database, *, user_id: str, size: int) -> list[Event]:
    """The frames a new socket starts with: ``snapshot`` then ``unread_count.updated``.

    Both are read at one instant and carry that instant's version, so the socket can
    tell which live events they already include.
    """
    async with db.begin() as session:
        await store.use_snapshot_isolation(session)
        version = await store.current_version(session, user_id)
        rows = await store.list_notifications(session, user_id, skip=0, limit=size)
        count = await store.unread_count(session, user_id)
    items = [item_payload(NotificationItem.model_validate(row)) for row in rows]
    return [
        Event(user_id, version, SNAPSHOT, encode_frame(SNAPSHOT, items)),
        count_event(user_id, version, count),
    ]


async def purge_idempotency_keys(db: Database, *, older_than: timedelta) -> int:
    async with db.begin() as session:
        return await store.purge_idempotency_records(session, datetime.now(UTC) - older_than)


async def _publish(broker: Broker, events: Sequence[Event]) -> None:
    """Publish after commit. A broker failure loses live delivery, never the data."""
    try:
        await broker.publish(events)
        metrics.events_published.inc(len(events))
    except Exception:
        logger.exception("publishing %d events failed; clients recover on reconnect", len(events))
