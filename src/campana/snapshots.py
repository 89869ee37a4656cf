"""A socket's opening: ``snapshot`` then ``unread_count.updated``, read at one instant.

One ``SnapshotLoader`` serves every socket of the process; the hub is handed it once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Sequence

from campana import store
from campana.protocol import Event, count_event, counts_event, snapshot_event
from campana.schemas import item_payloads
from campana.store import Database

# Users whose opening frames one transaction reads at most (a reconnect storm).
SNAPSHOT_BATCH_USERS = 500


class SnapshotLoader:
    """Loads the opening frames of many sockets in one transaction.

    A reconnect storm (an instance restarts, 10,000 tabs come back) would otherwise be
    one transaction per socket. Requests that arrive while a batch is being read form the
    next batch, so a lone socket waits for nothing. Each user's version, items and count
    are still read at one instant: the whole batch is one REPEATABLE READ transaction.
    """

    def __init__(self, db: Database, *, size: int, max_users: int = SNAPSHOT_BATCH_USERS) -> None:
        self._db = db
        self._size = size
        self._max_users = max_users
        self._waiting: dict[str, asyncio.Future[list[Event]]] = {}
        self._reader: asyncio.Task[None] | None = None

    def load_opening(self, user_id: str) -> Awaitable[list[Event]]:
        """The ``snapshot`` and ``unread_count.updated`` frames a new socket starts with."""
        waiting = self._waiting.get(user_id)
        if waiting is None:
            waiting = self._waiting[user_id] = asyncio.get_running_loop().create_future()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_batches())
        return asyncio.shield(waiting)

    async def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's current version, in one query (the hub's sweep)."""
        async with self._db() as session:
            badges = await store.badges(session, user_ids)
        return {user_id: badge.version for user_id, badge in badges.items()}

    async def _read_batches(self) -> None:
        try:
            while self._waiting:
                batch = dict(itertools.islice(self._waiting.items(), self._max_users))
                for user_id in batch:
                    del self._waiting[user_id]
                try:
                    openings = await read_openings(self._db, user_ids=list(batch), size=self._size)
                except Exception as error:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(error)
                    continue
                for user_id, future in batch.items():
                    if not future.done():
                        future.set_result(openings[user_id])
        finally:
            self._reader = None


async def read_openings(db: Database, *, user_ids: list[str], size: int) -> dict[str, list[Event]]:
    """The frames each user's new socket starts with: ``snapshot``, ``unread_count.updated``,
    then ``counts.updated`` (only sockets that asked for it are sent it).

    All are read at one instant and carry that instant's version, so a socket can tell
    which live events they already include.
    """
    async with db.begin() as session:
        await store.use_snapshot_isolation(session)
        badges = await store.badges(session, user_ids)
        newest = await store.newest_notifications(session, user_ids, size)
    # Every row of the batch goes through pydantic in one call, then back to its user.
    payloads = iter(item_payloads([row for user_id in user_ids for row in newest[user_id]]))
    openings: dict[str, list[Event]] = {}
    for user_id in user_ids:
        items = list(itertools.islice(payloads, len(newest[user_id])))
        badge = badges[user_id]
        openings[user_id] = [
            snapshot_event(user_id, badge.version, items),
            count_event(user_id, badge.version, badge.unread),
            counts_event(user_id, badge.version, badge.counts),
        ]
    return openings
