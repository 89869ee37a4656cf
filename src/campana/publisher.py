"""Publishing after commit, and making up for a publish that fails.

A failed publish loses live delivery, never data. Its users are marked stale; once the
broker takes messages again, each stale user's current version is published as a notice
(``user.version``), and every process holding a socket behind that version reloads it.
After a publish timed out (a broker that hangs), later publishes skip the broker and mark
their users too until a notice gets through: each would otherwise make its caller wait
for the timeout. What no process knows it missed (one died between commit and publish)
is found by the hub's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from campana import metrics, store
from campana.broker import Broker, BrokerTimeout
from campana.protocol import Event, version_event

logger = logging.getLogger(__name__)

# Between tries to send the notices. A try against a broker that refuses costs nothing;
# one against a broker that hangs lasts its timeout anyway.
REPAIR_DELAY_SECONDS = 0.5


class Publisher:
    """Hands committed changes' events to the broker; remembers whose were lost."""

    def __init__(self, db: async_sessionmaker[AsyncSession], broker: Broker) -> None:
        self._db = db
        self._broker = broker
        # user -> the number of the mark: a user marked again while a notice is being
        # sent stays marked, for the change behind the new mark may be newer than it.
        self._stale: dict[str, int] = {}
        self._marks = itertools.count()
        self._skip_broker = False
        self._repair: asyncio.Task[None] | None = None

    @property
    def stale_users(self) -> int:
        return len(self._stale)

    async def publish(self, events: Sequence[Event]) -> None:
        if self._skip_broker:
            self._mark_stale(events)
            return
        try:
            await self._broker.publish(events)
        except Exception as error:
            metrics.publish_failures.inc()
            self._skip_broker |= isinstance(error, BrokerTimeout)
            if not self._stale:
                logger.warning(
                    "publishing %d events failed (%s); their users' sockets will reload once "
                    "the broker takes a notice",
                    len(events),
                    type(error).__name__,
                )
            self._mark_stale(events)
            return
        metrics.events_published.inc(len(events))

    async def close(self) -> None:
        repair = self._repair
        if repair is not None:
            repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repair

    def _mark_stale(self, events: Sequence[Event]) -> None:
        mark = next(self._marks)
        for event in events:
            self._stale[event.user_id] = mark
        if self._repair is None:
            self._repair = asyncio.create_task(self._send_notices())

    async def _send_notices(self) -> None:
        try:
            while self._stale:
                await asyncio.sleep(REPAIR_DELAY_SECONDS * random.uniform(0.5, 1.0))  # noqa: S311
                marked = dict(self._stale)
                try:
                    # Asked first, so that an outage costs the database nothing.
                    await self._broker.ping()
                    async with self._db() as session:
                        badges = await store.badges(session, list(marked))
                    await self._broker.publish(
                        [version_event(user_id, badges[user_id].version) for user_id in marked]
                    )
                except Exception as error:
                    logger.debug("sending notices failed (%s)", type(error).__name__)
                    continue
                for user_id, mark in marked.items():
                    if self._stale.get(user_id) == mark:
                        del self._stale[user_id]
                self._skip_broker = False
                logger.info("the broker took notices for %d stale users", len(marked))
        finally:
            self._repair = None
