"""How events reach every process that holds a socket of their user.

The hub talks only to the ``Broker`` protocol. ``InProcessBroker`` serves the embedded
default (one process); a Redis broker implements the same protocol for many processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from campana import metrics
from campana.protocol import COUNTS_UPDATED, Event

logger = logging.getLogger(__name__)

# Events of one publish, in order; a user's events stay in version order.
Deliver = Callable[[Sequence[Event]], None]
Resync = Callable[[], None]


class BrokerTimeout(Exception):
    """The broker did not answer a publish in time: it may hang, or be slow to recover."""


class Broker(Protocol):
    async def start(self, deliver: Deliver, resync: Resync) -> None:
        """Begin handing events of subscribed users to ``deliver``.

        ``resync`` is called when events may have been missed (a broker outage ended), so
        that every socket can be sent the current state again.
        """

    async def close(self) -> None: ...

    async def subscribe(self, user_id: str) -> None:
        """Return once events published for ``user_id`` from now on will be delivered."""

    async def unsubscribe(self, user_id: str) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Send events, already serialised, to every process subscribed to their user.

        Raises ``BrokerTimeout`` if the broker does not answer in time, and any other
        exception if it cannot be reached.
        """

    async def ping(self) -> None:
        """Raise unless the broker is reachable (readiness)."""


class InProcessBroker:
    """Delivers in the publishing process itself: the broker of a single process."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._subscribed: set[str] = set()

    async def start(self, deliver: Deliver, resync: Resync) -> None:
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
        deliver([event for event in events if event.user_id in self._subscribed])

    async def ping(self) -> None:
        return None


CHANNEL_PREFIX = "campana:user:"
# Every process reads this channel. A publish naming at least BATCH_MIN_USERS users goes
# there as one message instead of one per user: Redis and every reader then handle one
# message for a broadcast, and each process keeps the events of its own users.
BATCH_CHANNEL = b"campana:batch"
BATCH_MIN_USERS = 256
PUBLISH_TIMEOUT_SECONDS = 5.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


def encode_events(events: Sequence[Event]) -> bytes:
    """One message for several events; each frame travels untouched, serialised once."""
    # Fields in the order of Event, so a record unpacks straight into one.
    return orjson.dumps(
        [[e.user_id, e.version, e.name, e.json, e.published_at, e.part] for e in events]
    )


class MalformedMessage(ValueError):
    """A message on a Campana channel that ``encode_events`` did not write."""


def decode_events(data: bytes, wanted: set[str]) -> list[Event]:
    """The events of ``wanted`` users; the rest are other processes' business.

    Raises ``MalformedMessage`` for anything else on the channel (another program, another
    version): checked per wanted record, so a broadcast costs no more than before.
    """
    try:
        records = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise MalformedMessage("not JSON") from error
    if not isinstance(records, list):
        raise MalformedMessage("not a list of events")
    events = []
    for record in records:
        if not isinstance(record, list) or len(record) != 6 or not isinstance(record[0], str):
            raise MalformedMessage("an event is not a record of six fields")
        if record[0] not in wanted:
            continue
        user_id, version, name, text, published_at, part = record
        if not (
            type(version) is int
            and isinstance(name, str)
            and isinstance(text, str)
            and type(published_at) in (int, float)
            and type(part) is int
            # Every count travels as the badge's numbers (``protocol.counts_event``).
            and (name != COUNTS_UPDATED or text.startswith("["))
        ):
            raise MalformedMessage("an event's fields have the wrong types")
        events.append(Event(user_id, version, name, text, float(published_at), part))
    return events


def _channel(user_id: str) -> bytes:
    return (CHANNEL_PREFIX + user_id).encode()


class RedisBroker:
    """Redis Pub/Sub: one channel per user, one subscriber connection per process.

    A reader task owns the subscriber connection. When it breaks, the task reconnects
    with capped, jittered backoff, subscribes again to every channel this process needs
    and calls ``resync``: what was published meanwhile is lost to Pub/Sub, so the sockets
    are sent the current state instead.
    """

    def __init__(self, url: str, *, subscribe_timeout: float = 5.0) -> None:
        no_retry = Retry(NoBackoff(), 0)
        # A pooled connection that Redis closed (a restart while nothing was published)
        # fails on its next use: that one call is retried once on a new connection. A
        # timeout is not retried: Redis may have taken the message, and a hung Redis would
        # only make the caller wait twice. A duplicate is harmless (sockets drop versions
        # they have); a message that still fails marks its users stale (publisher.py).
        self._publisher: Redis = Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            socket_connect_timeout=2,
            socket_timeout=PUBLISH_TIMEOUT_SECONDS,
        )
        # The subscriber waits for messages indefinitely: no read timeout on it.
        self._subscriber: Redis = Redis.from_url(
            url,
            retry=no_retry,
            socket_connect_timeout=2,
            socket_timeout=None,
            client_name=f"campana-subscriber-{os.getpid()}",  # visible in CLIENT LIST
        )
        self._subscribe_timeout = subscribe_timeout
        # Subscribed even with no user, so the connection always has a channel to read.
        self._process_channel = f"campana:process:{uuid.uuid4().hex}".encode()
        self._wanted: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._to_subscribe: set[bytes] = set()
        self._subscribing: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        self._resync: Resync | None = None
        self._resync_pending = False

    async def start(self, deliver: Deliver, resync: Resync) -> None:
        self._deliver = deliver
        self._resync = resync
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._publisher.aclose()
        await self._subscriber.aclose()

    async def subscribe(self, user_id: str) -> None:
        self._wanted.add(user_id)
        pubsub = self._pubsub
        if pubsub is None:
            return  # Broker down: the resync after reconnecting covers this socket.
        channel = _channel(user_id)
        confirmed = self._confirmations.get(channel)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[channel] = confirmed
        self._to_subscribe.add(channel)
        if self._subscribing is None:
            self._subscribing = asyncio.create_task(self._send_subscriptions(pubsub))
        try:
            # Redis confirms once it will route every later PUBLISH to us.
            await asyncio.wait_for(asyncio.shield(confirmed), self._subscribe_timeout)
        except TimeoutError:
            logger.warning("subscribing a user timed out; the reader will reconnect and resync")

    async def _send_subscriptions(self, pubsub: PubSub) -> None:
        """One SUBSCRIBE for every channel asked for meanwhile (in a storm, hundreds)."""
        try:
            while self._to_subscribe:
                channels, self._to_subscribe = self._to_subscribe, set()
                await pubsub.subscribe(*channels)
        except (RedisError, OSError):
            logger.warning("subscribing users failed; the reader will reconnect and resync")
        finally:
            self._subscribing = None

    async def unsubscribe(self, user_id: str) -> None:
        self._wanted.discard(user_id)
        pubsub = self._pubsub
        if pubsub is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await pubsub.unsubscribe(_channel(user_id))

    async def publish(self, events: Sequence[Event]) -> None:
        """One message per user on the user's channel, or one for all on the batch channel."""
        try:
            await self._publish(events)
        except RedisTimeout as error:
            raise BrokerTimeout() from error

    async def _publish(self, events: Sequence[Event]) -> None:
        by_user: dict[str, list[Event]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        if len(by_user) >= BATCH_MIN_USERS:
            await self._publisher.publish(BATCH_CHANNEL, encode_events(events))
        elif len(by_user) == 1:
            [(user_id, user_events)] = by_user.items()
            await self._publisher.publish(_channel(user_id), encode_events(user_events))
        else:
            async with self._publisher.pipeline(transaction=False) as pipeline:
                for user_id, user_events in by_user.items():
                    pipeline.publish(_channel(user_id), encode_events(user_events))
                await pipeline.execute()

    async def ping(self) -> None:
        await self._publisher.ping()

    async def _read_forever(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        connected_before = False
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await self._subscribe_wanted(pubsub)
                self._pubsub = pubsub  # from here on, a new user subscribes by itself
                if connected_before:
                    metrics.broker_reconnects.inc()
                    logger.warning("broker connection is back; resending state to sockets")
                # Sockets attached while the broker was away missed what was published
                # meanwhile. Redis confirms subscriptions in order: once it confirms this
                # last one, it routes every channel above, and each socket's fresh state
                # is read after that, so none can miss a PUBLISH.
                self._resync_pending = True
                await pubsub.subscribe(self._process_channel)
                connected_before = True
                delay = BACKOFF_FIRST_SECONDS
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    try:
                        self._handle(message)
                    except Exception:  # a bug in delivery must not end every delivery
                        logger.exception("handling a broker message failed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                logger.warning("broker connection lost (%s); reconnecting", type(error).__name__)
            finally:
                self._pubsub = None
                self._release_waiters()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _subscribe_wanted(self, pubsub: PubSub) -> None:
        """Subscribe every user wanted, including those who arrive meanwhile: while the
        connection is being made they find none to subscribe on (``subscribe``)."""
        subscribed: set[bytes] = set()
        channels = {BATCH_CHANNEL, *(_channel(u) for u in self._wanted)}
        while channels:
            await pubsub.subscribe(*channels)
            subscribed |= channels
            channels = {_channel(u) for u in self._wanted} - subscribed

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel: bytes = message["channel"]
        if kind == "message":
            deliver = self._deliver
            if deliver is None or channel == self._process_channel:
                return
            try:
                events = decode_events(message["data"], self._wanted)
            except MalformedMessage as error:
                logger.warning(
                    "ignored a message on %s: %s", channel.decode(errors="replace"), error
                )
                return
            deliver(events)
        elif kind == "subscribe":
            if channel == self._process_channel and self._resync_pending:
                self._resync_pending = False
                if self._resync is not None:
                    self._resync()
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    def _release_waiters(self) -> None:
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_result(None)
        self._confirmations.clear()
