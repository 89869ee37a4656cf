"""The producer call: one item per recipient, all or none, then each announced to its owner.

``Creator`` holds what a create needs: the database, the publisher, the recipients'
limit, the idempotency records and group commit (``CreateBatcher``): creates without an
idempotency key share their transaction with concurrent ones, one commit for many, which
is what bounds creates per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from campana import metrics, store
from campana.errors import IdempotencyConflict, InvalidRequest
from campana.protocol import Event, count_event, counts_event, created_event
from campana.publisher import Publisher
from campana.schemas import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    ItemPayload,
    NotificationCreate,
    NotificationItem,
    item_payload,
)
from campana.store import Database, needs_database

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Created:
    items: list[ItemPayload]  # as the wire shows them: built once, for events and answer
    replayed: bool


class Creator:
    """Creates notifications for the producer call (``services.creates.create(...)``)."""

    def __init__(self, db: Database, publisher: Publisher, *, max_recipients: int) -> None:
        self._db = db
        self._publisher = publisher
        self._max_recipients = max_recipients
        self._batcher = CreateBatcher(db, publisher, max_rows=max(max_recipients, MIN_BATCH_ROWS))

    def start(self) -> None:
        self._batcher.start()

    async def close(self) -> None:
        """Write what is queued, then stop; later creates are written alone."""
        await self._batcher.close()

    @needs_database
    async def create(
        self, *, producer: str, request: NotificationCreate, idempotency_key: str | None
    ) -> Created:
        """Create one item per recipient, all or none, then announce each to its owner."""
        if len(request.recipients) > self._max_recipients:
            raise InvalidRequest(f"at most {self._max_recipients} recipients in one call")
        key = _idempotency_key(idempotency_key, request.idempotency_key)
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
        # The rows differ only by id and recipient (who is not in the payload): the model
        # serialises the first, the others are copies with their own id (a broadcast of
        # 10,000 would otherwise validate and dump 10,000 models).
        first = item_payload(NotificationItem.model_validate(rows[0]))
        items = [first, *({**first, "id": str(row.id)} for row in rows[1:])]
        if key is not None:
            return await self._create_idempotent(producer, key, request, rows, items)
        await self._batcher.write(rows, items)
        return Created(items=items, replayed=False)

    async def _create_idempotent(
        self,
        producer: str,
        key: str,
        request: NotificationCreate,
        rows: list[store.NewNotification],
        items: list[ItemPayload],
    ) -> Created:
        fingerprint = hashlib.sha256(request.fingerprint()).hexdigest()
        async with self._db() as session:
            replay = await _replay(session, producer, key, fingerprint)
        if replay is not None:
            return replay
        try:
            async with self._db.begin() as session:
                # First, so that a concurrent retry with the same key fails before any work.
                await store.save_idempotency_record(
                    session,
                    producer=producer,
                    key=key,
                    fingerprint=fingerprint,
                    response=orjson.dumps(items).decode(),
                    created_at=rows[0].created_at,
                )
                badges = await store.add_notifications(session, rows)
        except IntegrityError:
            async with self._db() as session:
                replay = await _replay(session, producer, key, fingerprint)
            if replay is None:
                raise
            return replay
        await self._publisher.publish(_creation_events(rows, items, badges))
        return Created(items=items, replayed=False)


async def _create_alone(
    db: Database,
    publisher: Publisher,
    rows: list[store.NewNotification],
    items: list[ItemPayload],
) -> None:
    async with db.begin() as session:
        badges = await store.add_notifications(session, rows)
    await publisher.publish(_creation_events(rows, items, badges))


def _creation_events(
    rows: Sequence[store.NewNotification],
    items: Sequence[ItemPayload],
    badges: dict[str, store.Badge],
) -> list[Event]:
    """Each item's ``notification.created``, then one count per user after its last item.

    A user with k rows got the k versions ending at its last one, handed out in row order.
    The count is the one after the transaction, so it carries that last version.
    """
    committed_at = time.time()
    remaining = Counter(row.user_id for row in rows)
    events: list[Event] = []
    for row, item in zip(rows, items, strict=True):
        user_id = row.user_id
        remaining[user_id] -= 1
        badge = badges[user_id]
        version = badge.version - remaining[user_id]
        events.append(created_event(user_id, version, item, committed_at))
        if remaining[user_id] == 0:
            events.append(count_event(user_id, version, badge.unread, committed_at))
            events.append(counts_event(user_id, version, badge.counts, committed_at))
    return events


# The fewest rows a shared transaction may hold, whatever CAMPANA_MAX_RECIPIENTS says:
# SQLAlchemy writes up to 1000 rows in one INSERT statement.
MIN_BATCH_ROWS = 1000


@dataclass(slots=True)
class _QueuedCreate:
    rows: list[store.NewNotification]
    items: list[ItemPayload]
    written: asyncio.Future[None]


class CreateInterrupted(Exception):
    """A shared create ended without a known outcome; retrying it could duplicate it."""


class CreateBatcher:
    """Group commit: concurrent creates without an idempotency key share transactions.

    A writer takes everything queued as soon as it is free, so a lone create is written at
    once and, under load, the next batch gathers while a transaction runs: one commit (one
    fsync) for many creates. A call is never split across transactions, and a batch holds
    at most ``max_rows`` rows, so the largest broadcast fits.

    One writer, because it publishes batch after batch: each user's events leave in
    version order. A second concurrent writer measured no faster (the event loop, not the
    database, is then the bottleneck) and would have to reorder its publishes.
    """

    def __init__(self, db: Database, publisher: Publisher, *, max_rows: int) -> None:
        self._db = db
        self._publisher = publisher
        self._max_rows = max_rows
        self._queue: deque[_QueuedCreate] = deque()
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever())

    async def close(self) -> None:
        """Write what is queued, then stop; later creates are written alone."""
        self._closing = True
        self._queued.set()
        if self._writer is not None:
            await self._writer

    async def write(self, rows: list[store.NewNotification], items: list[ItemPayload]) -> None:
        """Commit in a transaction shared with concurrent calls, then publish."""
        if self._closing or self._writer is None:
            await _create_alone(self._db, self._publisher, rows, items)
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_QueuedCreate(rows, items, written))
        self._queued.set()
        await written

    async def _write_forever(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self._closing:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            try:
                await self._write_batch(batch)
            except Exception:
                logger.exception("writing a batch of %d creates failed", len(batch))
            finally:
                # Callers still wait only if the batch broke off (a bug, or cancellation):
                # they fail, as retrying could duplicate a batch that did commit.
                for create in batch:
                    _settle(create, CreateInterrupted())

    def _take_batch(self) -> list[_QueuedCreate]:
        batch: list[_QueuedCreate] = []
        size = 0
        while self._queue:
            create = self._queue[0]
            if batch and size + len(create.rows) > self._max_rows:
                break
            self._queue.popleft()
            if create.written.cancelled():  # its caller is gone and nothing was written
                continue
            batch.append(create)
            size += len(create.rows)
        return batch

    async def _write_batch(self, batch: list[_QueuedCreate]) -> None:
        rows = [row for create in batch for row in create.rows]
        items = [item for create in batch for item in create.items]
        metrics.create_batch_size.observe(len(rows))
        try:
            async with self._db.begin() as session:
                badges = await store.add_notifications(session, rows)
        except Exception as error:
            # Alone already, or the database is away: each caller gets the error as it is
            # (writing each alone would make the k-th caller wait k timeouts).
            if len(batch) == 1 or store.is_unavailable(error):
                for create in batch:
                    _settle(create, error)
                return
            logger.warning(
                "a shared transaction of %d creates failed; writing each alone",
                len(batch),
                exc_info=True,
            )
            await self._write_each_alone(batch)
            return
        await self._publisher.publish(_creation_events(rows, items, badges))
        for create in batch:
            _settle(create)

    async def _write_each_alone(self, batch: list[_QueuedCreate]) -> None:
        """One transaction each, so that only the culprit fails; in turn, to keep order."""
        for create in batch:
            try:
                await _create_alone(self._db, self._publisher, create.rows, create.items)
            except Exception as error:
                _settle(create, error)
            else:
                _settle(create)


def _settle(create: _QueuedCreate, error: Exception | None = None) -> None:
    """Answer the waiting caller, unless it went away or was already answered."""
    if create.written.done():
        return
    if error is None:
        create.written.set_result(None)
    else:
        create.written.set_exception(error)


def _idempotency_key(header: str | None, body: str | None) -> str | None:
    if header is not None and body is not None and header != body:
        raise InvalidRequest("Idempotency-Key header and idempotency_key field differ")
    key = header if header is not None else body
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters")
    return key


async def _replay(
    session: AsyncSession, producer: str, key: str, fingerprint: str
) -> Created | None:
    record = await store.find_idempotency_record(session, producer, key)
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyConflict()
    return Created(items=orjson.loads(record.response), replayed=True)


async def purge_idempotency_keys(db: Database, *, older_than: timedelta) -> int:
    async with db.begin() as session:
        return await store.purge_idempotency_records(session, datetime.now(UTC) - older_than)
