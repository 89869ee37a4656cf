"""A user's own changes (read, unread, seen, archive, delete; one item or in bulk) and
reads: each change is written in a transaction, then what changed is published.

Every change takes the user's row lock, bumps the user's version and moves the inbox's
counts in the same transaction; its events carry that version. A bulk change is a
series of such changes, a bounded batch each, so that it never holds the user (or the
database) for long: other users' creates and reads go on between its batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import TypeAdapter

from campana import store
from campana.errors import NotificationNotFound
from campana.protocol import (
    Event,
    changed_event,
    count_event,
    counts_event,
    deleted_event,
    read_event,
    updated_event,
    version_event,
)
from campana.publisher import Publisher
from campana.schemas import BulkResult, NotificationItem, item_payload
from campana.store import Action, Badge, Database, View, is_unavailable, needs_database

logger = logging.getLogger(__name__)

# A bulk change's batch: one transaction of at most this many items (tens of ms).
BULK_BATCH_ROWS: Final = 1000
# After each batch a bulk change pauses this many times as long as the batch took: it
# keeps PostgreSQL busy a quarter of the time at most, and everyone else's work goes in
# between (bench/history.py: half of 1.0's cost to others' p99, twice as long).
BULK_PAUSE_RATIO: Final = 3.0
# How long a bulk call's answer waits for it to finish before it answers 202.
BULK_ANSWER_SECONDS: Final = 1.0
# A batch that failed because the database was away is tried again after this, doubling.
BULK_RETRY_FIRST_SECONDS: Final = 0.5
BULK_RETRY_MAX_SECONDS: Final = 5.0

# What each bulk action says it did in ``notifications.changed``.
_CHANGE: Final[dict[Action, dict[str, bool]]] = {
    Action.READ: {"is_read": True, "is_seen": True},
    Action.SEEN: {"is_seen": True},
    Action.ARCHIVE: {"is_archived": True},
    Action.UNARCHIVE: {"is_archived": False},
    Action.DELETE: {"deleted": True},
}


def _count_events(
    user_id: str, badge: Badge, committed_at: float, *, unread_moved: bool
) -> list[Event]:
    """The counts after a change: the guide's count only when it moved, then every count."""
    events = [counts_event(user_id, badge.version, badge.counts, committed_at)]
    if unread_moved:
        events.insert(0, count_event(user_id, badge.version, badge.unread, committed_at))
    return events


@needs_database
async def change_notification(
    db: Database,
    publisher: Publisher,
    *,
    user_id: str,
    notification_id: uuid.UUID,
    action: Action,
) -> NotificationItem:
    """Change one item; events go out only when this call changed it.

    The answer is the item after the change (for a delete, as it was).
    """
    async with db.begin() as session:
        change = await store.change_notification(session, user_id, notification_id, action)
    if change is None:
        raise NotificationNotFound()
    item = NotificationItem.model_validate(change.item)
    badge = change.badge
    if badge is None:
        return item
    committed_at = time.time()
    version = badge.version
    counts = _count_events(user_id, badge, committed_at, unread_moved=change.unread_moved)
    if action is Action.DELETE:
        events = [deleted_event(user_id, version, notification_id, committed_at), *counts]
    elif action is Action.READ:
        # The guide's pair first, as it says (the read, then the count), then the rest.
        events = [
            read_event(user_id, version, notification_id, committed_at),
            *counts[:-1],
            updated_event(user_id, version, item_payload(item), committed_at, part=1),
            counts[-1],
        ]
    else:
        events = [updated_event(user_id, version, item_payload(item), committed_at), *counts]
    await publisher.publish(events)
    return item


@dataclass(frozen=True, slots=True)
class BulkCall:
    """One bulk change asked for: which action on which items of which user."""

    user_id: str
    action: Action
    view: View
    up_to: uuid.UUID | None = None


@dataclass(slots=True)
class _Progress:
    changed: int = 0
    unread: int = 0
    done: bool = False
    up_to: dict[str, str] | None = None  # the position of ``up_to``, as the wire says it
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class BulkChanges:
    """Runs bulk changes in bounded batches, past the call that asked if they take long.

    Each batch is one transaction and one version, its counts published as it commits;
    the last one also publishes ``notifications.changed``. Only items created at the
    version the call started from (or that of ``up_to``) or before are changed, so an
    item created during the change is never touched by it.
    """

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        batch_rows: int = BULK_BATCH_ROWS,
        answer_seconds: float = BULK_ANSWER_SECONDS,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._batch_rows = batch_rows
        self._answer_seconds = answer_seconds
        self._running: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        return len(self._running)

    @needs_database
    async def run(self, call: BulkCall) -> BulkResult:
        """Start the change and answer once it is done, or once it has run a while."""
        async with self._db() as session:
            start, up_to = await self._starting_point(session, call)
        progress = _Progress(unread=start.unread, up_to=up_to)
        # The first batch runs in the call: a database that is away answers 503 at once.
        after = await self._batch(call, start.version, None, progress)
        if not progress.done:
            task = asyncio.create_task(self._carry_on(call, start.version, after, progress))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.finished.wait(), self._answer_seconds)
        return BulkResult(count=progress.unread, changed=progress.changed, done=progress.done)

    async def close(self) -> None:
        """Stop the changes under way (each batch done so far stays, counts exact)."""
        for task in tuple(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _starting_point(
        self, session: Any, call: BulkCall
    ) -> tuple[Badge, dict[str, str] | None]:
        """The user's badge, its version bounded by ``up_to``'s, and the position the change
        stops at: ``up_to``'s, or else the view's newest item's (none: an empty view)."""
        badge = await store.badge(session, call.user_id)
        if call.up_to is None:
            newest_rows = await store.list_notifications(
                session, call.user_id, limit=1, view=View(archived=call.view.archived)
            )
            if not newest_rows:
                return badge, None
            first = newest_rows[0]
            return badge, {"id": str(first.id), "created_at": _iso(first.created_at)}
        named = await store.find_notification(session, call.user_id, call.up_to)
        if named is None:
            raise NotificationNotFound("up_to: no notification of yours has this id")
        position = {"id": str(named.id), "created_at": _iso(named.created_at)}
        return Badge(min(badge.version, named.version), badge.counts), position

    async def _carry_on(
        self,
        call: BulkCall,
        up_to_version: int,
        after: tuple[str, Any, uuid.UUID] | None,
        progress: _Progress,
    ) -> None:
        delay = BULK_RETRY_FIRST_SECONDS
        took = 0.0
        while not progress.done:
            await asyncio.sleep(took * BULK_PAUSE_RATIO)  # others' work goes in between
            started = time.monotonic()
            try:
                after = await self._batch(call, up_to_version, after, progress)
            except Exception as error:
                if not is_unavailable(error):
                    logger.exception("a bulk change stopped (%s)", call.action.value)
                    progress.finished.set()
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, BULK_RETRY_MAX_SECONDS)
                continue
            delay = BULK_RETRY_FIRST_SECONDS
            took = time.monotonic() - started

    async def _batch(
        self,
        call: BulkCall,
        up_to_version: int,
        after: tuple[str, Any, uuid.UUID] | None,
        progress: _Progress,
    ) -> tuple[str, Any, uuid.UUID] | None:
        """One batch, committed and published; where the next starts."""
        async with self._db.begin() as session:
            batch = await store.change_batch(
                session,
                call.user_id,
                call.action,
                call.view,
                up_to_version=up_to_version,
                after=after,
                limit=self._batch_rows,
            )
            last = batch.resume_after is None
            badge = batch.badge
            changed_any = progress.changed + batch.changed > 0
            if last and badge is None:
                # The batch before was full and the last, or nothing matched: the end has a
                # version of its own all the same (the guide's read-all always sends a count).
                badge = await store.mark_version(session, call.user_id)
            notice = None
            if last and changed_any:
                notice = await store.mark_version(session, call.user_id)
        committed_at = time.time()
        if badge is not None:
            moved = batch.unread_moved or (last and not changed_any)
            events = _count_events(call.user_id, badge, committed_at, unread_moved=moved)
            if last:  # after the guide's count, before every count
                payload = self._changed_payload(call, progress)
                done = changed_event(call.user_id, badge.version, payload, committed_at)
                events.insert(len(events) - 1, done)
            if notice is not None:
                # A tab applies the change by its items' order; the server's bound is the
                # order of commits, which an item stamped earlier but committed later
                # breaks. A version past the change makes every tab read its inbox again.
                events.append(version_event(call.user_id, notice.version))
            progress.unread = badge.unread
            await self._publisher.publish(events)
        progress.changed += batch.changed
        if last:
            progress.done = True
            progress.finished.set()
        return batch.resume_after

    def _changed_payload(self, call: BulkCall, progress: _Progress) -> dict[str, Any]:
        view = call.view
        return {
            "change": _CHANGE[call.action],
            "filter": {
                "archived": view.archived,
                "types": list(view.types) if view.types is not None else None,
                "is_read": view.is_read,
                "up_to": progress.up_to,
            },
        }


_INSTANT: Final = TypeAdapter(datetime)


def _iso(instant: datetime) -> str:
    """An instant as items carry ``created_at`` on the wire."""
    text: str = _INSTANT.dump_python(instant, mode="json")
    return text


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
    view: View = store.INBOX,
) -> Page:
    """A page of the user's items in ``view``, newest first: older than ``before`` (the
    last item of the page before: the cursor), after skipping ``skip`` of them (the older
    way)."""
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
            view=view,
        )
    items = [NotificationItem.model_validate(row) for row in rows[:limit]]
    return Page(items, has_more=len(rows) > limit)


@needs_database
async def unread_count(db: Database, *, user_id: str) -> int:
    async with db() as session:
        return await store.unread_count(session, user_id)


@needs_database
async def counts(db: Database, *, user_id: str) -> Badge:
    async with db() as session:
        return await store.badge(session, user_id)
