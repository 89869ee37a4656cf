"""How events reach every process that holds a socket of their user.

The hub talks only to the ``Broker`` protocol. ``InProcessBroker`` serves the embedded
default (one process); a Redis broker implements the same protocol for many processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from campana.schemas import Event

Deliver = Callable[[Event], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None:
        """Begin handing events of subscribed users to ``deliver``."""

    async def close(self) -> None: ...

    async def subscribe(self, user_id: str) -> None:
        """Return once events published for ``user_id`` from now on will be delivered."""

    async def unsubscribe(self, user_id: str) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Send events, already serialised, to every process subscribed to their user."""


class InProcessBroker:
    """Delivers in the publishing process itself: the broker of a single process."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._subscribed: set[str] = set()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None
        self._subscribed.clear()

    async def subscribe(self, user_id: str) -> None:
        self._subscribed.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        self._subscribed.discard(user_id)

    async def publish(self, events: Sequence[Event]) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        for event in events:
            if event.user_id in self._subscribed:
                deliver(event)
