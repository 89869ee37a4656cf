"""One socket of a user, as the hub sees it: its queue, backpressure, timers, expiry and
the reads of its state.

It acts on ``versions.TabVersions``' verdicts (what the tab may be sent next), reads its
state from an ``OpeningSource`` and knows a socket only through :class:`Socket`
(``api/ws.py`` provides it). ``hub.Hub`` makes one per accepted socket and fans events out
to them.

Calls go one way, down: hub → connection → socket, and connection → state source. The
socket reports up twice, each once: ``Connection.socket_closed`` when it stops being open
for a reason of its own (the peer's close, a protocol error, a stop), ``Hub.detach`` when
its transport is gone. A close the connection starts (``Connection.close``) is not
reported back to it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import operator
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from campana import metrics
from campana.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_TOKEN_REFUSED,
    CLOSE_TRY_AGAIN_LATER,
    COUNTS_UPDATED,
    KEEPALIVE_EVENT,
    KEEPALIVE_WIRE,
    Event,
    frame_text,
    to_wire,
)
from campana.versions import TabVersions, Verdict

logger = logging.getLogger(__name__)

KEEPALIVE_SLICES = 25
# Two instances that change one user at once may publish in the opposite order of their
# commits; the later version then arrives first. A socket that sees a version missing
# holds what follows this long for it before it reloads its state instead.
GAP_WAIT_SECONDS = 0.5


class Socket(Protocol):
    """What the hub needs of an open WebSocket (api/ws.py provides it)."""

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark."""

    def write(self, wire: bytes) -> None: ...

    def close_with(self, code: int) -> None:
        """Send a close frame with ``code`` and let the socket go; the connection that asks
        has stopped already, so the socket does not report this close back."""


class OpeningSource(Protocol):
    """Where a socket's state comes from (``snapshots.SnapshotLoader``)."""

    def load_opening(self, user_id: str) -> Awaitable[list[Event]]:
        """``snapshot`` then ``unread_count.updated``, both at the version read, which is
        at least the version of every change committed before the call."""


@dataclass(frozen=True, slots=True)
class SocketLimits:
    send_queue_size: int
    per_user: int
    per_process: int


_slots = itertools.count()


class Delivery(enum.Enum):
    """Where a connection's frames stand: the hub's side of a socket (``api/ws.py`` has
    its own ``Phase``, of the transport)."""

    LOADING = "loading"  # the socket's state is being read; events queue behind it
    LIVE = "live"  # events go out as they come
    WAITING = "waiting"  # a version is missing; later events wait a moment for it
    CLOSED = "closed"  # closing or gone; nothing more is sent


_VERSION = operator.attrgetter("version")


class Connection:
    """One open socket of a user, as the hub sees it.

    Frames go straight to the transport. They queue while the socket's state loads, while
    a missing version is awaited, or while the transport is paused. A socket whose queue
    fills while its transport is paused is closed with 1013 (its snapshot restores the
    state when it reconnects); one whose queue fills while it waits for a version or its
    state is dropped by the state read that follows.

    What the tab holds of its user's changes, and so what each event's fate is, are
    ``versions.TabVersions``' rules; the connection acts on their verdicts.
    """

    __slots__ = (
        "_delivery",
        "_expiry",
        "_gap_timer",
        "_queue",
        "_queue_size",
        "_reading",
        "_reload_again",
        "_source",
        "_versions",
        "_wants_counts",
        "keepalive_slot",
        "socket",
        "user_id",
    )

    def __init__(
        self,
        socket: Socket,
        user_id: str,
        limits: SocketLimits,
        expires_at: float,
        source: OpeningSource,
        *,
        counts: bool = False,
    ) -> None:
        self.socket = socket
        # Asked for ``counts.updated``; without, it is admitted (its version counts) but
        # never written, and the socket gets exactly the guide's frames.
        self._wants_counts = counts
        self.user_id = user_id
        self._source = source
        self._reading: asyncio.Task[None] | None = None  # a reload's read, while it runs
        self._queue: deque[Event] = deque()
        self._queue_size = limits.send_queue_size
        self._delivery = Delivery.LOADING
        self._versions = TabVersions()
        self._reload_again = False
        self._gap_timer: asyncio.TimerHandle | None = None
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()), self.close, CLOSE_TOKEN_REFUSED
        )
        self.keepalive_slot = next(_slots) % KEEPALIVE_SLICES

    @property
    def closing(self) -> bool:
        return self._delivery is Delivery.CLOSED

    @property
    def delivery(self) -> Delivery:
        return self._delivery

    @property
    def version(self) -> int:
        """The version of the state the tab holds; -1 before its first snapshot."""
        return self._versions.held

    def push(self, event: Event, wire: bytes | None = None) -> int:
        """Send ``event`` (``wire`` is its frame's bytes, shared by every socket) or queue it.

        Returns how many frames reached the transport now.
        """
        if self._delivery is Delivery.CLOSED:
            return 0
        if self._delivery is not Delivery.LIVE or self._queue or not self.socket.writable:
            return self._enqueue([event])
        return self._offer(event, wire)

    def push_all(self, events: list[Event], wires: list[bytes]) -> int:
        """``push`` each event, in one write when the socket takes them at once."""
        if len(events) == 1:
            return self.push(events[0], wires[0])
        if self._delivery is not Delivery.LIVE or self._queue or not self.socket.writable:
            return self._enqueue(events)
        ready: list[bytes] = []
        sent = 0
        for index, (event, wire) in enumerate(zip(events, wires, strict=True)):
            if self._delivery is not Delivery.LIVE:
                # The rest of the publish queues as one: a change's parts stay together.
                sent += self._enqueue(events[index:])
                break
            verdict = self._versions.admit(event)
            if verdict is Verdict.SEND:
                if event.name != COUNTS_UPDATED:
                    ready.append(wire)
                elif self._wants_counts:
                    ready.append(to_wire(frame_text(event)))
                continue
            if ready:  # what was admitted goes out before anything the verdict releases
                self.socket.write(b"".join(ready))
                sent += len(ready)
                ready = []
            sent += self._act_on(verdict, event)
        if ready:
            self.socket.write(b"".join(ready))
            sent += len(ready)
        return sent

    async def load(self) -> None:
        """Read the socket's state and send it, then what queued meanwhile: the first read
        (``Hub.open``), or a reload's. A first read that fails closes the socket (1011)."""
        try:
            events = await self._source.load_opening(self.user_id)
        except Exception as error:
            logger.warning("reading a socket's state failed (%s)", type(error).__name__)
            self._reload_failed()
            return
        finally:
            if self._reading is asyncio.current_task():
                self._reading = None  # a finished task is not kept per socket
        self._apply_snapshot(events)

    def _apply_snapshot(self, events: list[Event]) -> int:
        """Send a freshly read ``snapshot`` and count, then what queued while they loaded.

        A snapshot older than what the tab was already sent would un-read items and is
        dropped; it cannot happen for one read after the request, which is how the hub
        reads them. The queued events go out after it, each checked against its version.
        """
        if self._delivery is Delivery.CLOSED:
            return 0
        if self._reload_again:  # asked for again while loading: this one may be too old
            self._reload_again = False
            self._start_reading("again")
            return 0
        self._queue.extendleft(reversed(events))
        self._versions.behind = False
        self._delivery = Delivery.LIVE
        return self.flush()

    def _reload_failed(self) -> None:
        """The state could not be read: send what queued anyway, and let the sweep retry.

        A socket that never had its first snapshot is closed (1011) instead: its client
        reconnects and tries again.
        """
        if self._delivery is not Delivery.LOADING:
            return
        if self._versions.held < 0:
            self.close(CLOSE_INTERNAL_ERROR)
            return
        self._versions.behind = True
        self._reload_again = False
        self._delivery = Delivery.LIVE
        self.flush()

    def reload(self, reason: str) -> None:
        """Read the socket's state again (events may have been missed); while one read is
        under way, another follows it. Events queue behind it."""
        if self._delivery is Delivery.CLOSED:
            return
        if self._delivery is Delivery.LOADING:
            self._reload_again = True
            return
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        self._delivery = Delivery.LOADING
        self._start_reading(reason)

    def _start_reading(self, reason: str) -> None:
        metrics.socket_reloads.labels(reason).inc()
        self._reading = asyncio.ensure_future(self.load())

    def is_behind(self, version: int) -> bool:
        """True if the tab lacks a change up to ``version`` and nothing is on its way to it
        (a reload, or frames queued behind a paused transport)."""
        if self._delivery is not Delivery.LIVE or self._queue:
            return False
        return self._versions.lacks(version)

    def flush(self) -> int:
        """Send what is queued while the transport takes it (also on resume_writing)."""
        queue = self._queue
        sent = 0
        while queue and self._delivery is Delivery.LIVE and self.socket.writable:
            sent += self._offer(queue.popleft(), None)
        return sent

    def received(self, text: str) -> None:
        """A text frame from the client: answer ``ping``, ignore the rest."""
        if text == "ping" and self._delivery is not Delivery.CLOSED:
            self.push(KEEPALIVE_EVENT, KEEPALIVE_WIRE)

    def close(self, code: int) -> None:
        """Stop, then send the close frame (expiry, a reader too slow, a newer tab)."""
        if self._delivery is Delivery.CLOSED:
            return
        self._stop()
        self.socket.close_with(code)

    def socket_closed(self) -> None:
        """The socket's report: it is no longer open (the peer closed it, it failed, the
        server stops). Nothing more is sent."""
        if self._delivery is not Delivery.CLOSED:
            self._stop()

    def _stop(self) -> None:
        """Drop what is queued, stop the timers and the read under way; the one release."""
        self._delivery = Delivery.CLOSED
        self._queue.clear()
        self._expiry.cancel()
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None

    def _enqueue(self, events: list[Event]) -> int:
        """Queue ``events`` (one publish's, in order) behind what waits; while a version is
        awaited, see whether it came once they are all in: a change's later parts must not
        find the gap filled by its first and the tab gone past them."""
        for event in events:
            if len(self._queue) >= self._queue_size:
                self._overflow()
                return 0
            self._queue.append(event)
        if self._delivery is Delivery.WAITING:
            return self._while_waiting(events)
        return 0

    def _overflow(self) -> None:
        """The queue is full: a live socket's client does not read fast enough (1013; its
        snapshot restores the state when it reconnects); one waiting for a version or its
        state drops the queue, since a state read after now holds it all."""
        if self._delivery is Delivery.LIVE:
            metrics.send_queue_overflows.inc()
            self.close(CLOSE_TRY_AGAIN_LATER)
            return
        self._queue.clear()
        self.reload("overflow")

    def _while_waiting(self, events: list[Event]) -> int:
        """A version is awaited and ``events`` queued: a notice past the tab means the
        missing events are lost, not late; else the gap may be filled now."""
        if any(self._versions.announces_more(event) for event in events):
            self.reload("notice")
            return 0
        return self._fill_gap()

    def _offer(self, event: Event, wire: bytes | None) -> int:
        verdict = self._versions.admit(event)
        if verdict is Verdict.SEND:
            if not self._wants_counts and event.name == COUNTS_UPDATED:
                return 0
            self.socket.write(wire if wire else to_wire(frame_text(event)))
            return 1
        return self._act_on(verdict, event)

    def _act_on(self, verdict: Verdict, event: Event) -> int:
        if verdict is Verdict.GAP:
            # Wait for the missing version in front of this event.
            self._queue.appendleft(event)
            self._delivery = Delivery.WAITING
            loop = asyncio.get_running_loop()
            self._gap_timer = loop.call_later(GAP_WAIT_SECONDS, self._gap_not_filled)
        elif verdict is Verdict.BEHIND:
            self.reload("notice")
        return 0

    def _fill_gap(self) -> int:
        """Go live again if what waits, in version order, now misses nothing."""
        waiting = sorted(self._queue, key=_VERSION)  # stable: a change keeps its order
        if not self._versions.fills_gap(waiting):
            return 0
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        self._queue = deque(waiting)
        self._delivery = Delivery.LIVE
        return self.flush()

    def _gap_not_filled(self) -> None:
        if self._delivery is Delivery.WAITING:
            self.reload("gap")
