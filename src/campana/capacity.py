"""How many connections a process may hold, and how many it holds now.

Every connection costs a file descriptor, signed in or not. A process that runs out of
descriptors cannot accept, cannot reach its database and cannot open a file: one client
opening sockets that never sign in would take the service down for everybody. So one cap
counts every connection the process holds (HTTP and sockets), derived from the
descriptor limit with room left for the database pool, Redis and files; sockets that are
not signed in have a lower cap of their own (where one whose close is under way gives its
place to a newcomer), and are refused first: past
``READY_FRACTION`` of the cap, ``/readyz`` says not ready (a load balancer sends new tabs
elsewhere) and new sockets are refused, while signed-in ones and REST calls go on.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass
from typing import Protocol

from campana.settings import Settings

# Descriptors kept for what is not a client connection: the listening socket, stdio,
# logs, metrics files, the event loop's own, SQLite, migrations.
FIXED_RESERVE = 64
# Past this share of the connection cap the process is not ready and refuses new sockets.
READY_FRACTION = 0.9
# Sockets not signed in may hold at most this share of the cap ...
UNAUTHENTICATED_FRACTION = 0.1
# ... and at least this many, so that a small process still lets tabs sign in.
MIN_UNAUTHENTICATED = 16
# Where the hard limit is unlimited, the soft limit is raised this far.
MAX_RAISED_LIMIT = 1 << 20


def descriptor_limit() -> int:
    """The process's soft limit on open file descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_RAISED_LIMIT if soft == resource.RLIM_INFINITY else soft


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (no privilege needed); the new soft limit.

    Many systems start services at 1024 soft with a far higher hard limit: 1024 would cap
    a process at a few hundred tabs for no reason.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_RAISED_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # Refused above the kernel's nr_open, say: the soft limit stays.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return descriptor_limit()


class ClosingSocket(Protocol):
    """A socket not signed in whose close is under way (``api/ws.py``'s)."""

    def make_room(self) -> None:
        """Drop the connection now: a newcomer takes its place."""


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """The caps of one process, from settings and its descriptor limit."""

    connections: int  # every connection, HTTP or socket, signed in or not
    unauthenticated_sockets: int  # sockets whose token is not (yet) accepted
    signed_in_sockets: int  # the hub's cap; more are closed with 1013
    ready_below: int  # connections at which /readyz turns 503 and new sockets are refused

    @classmethod
    def of(cls, settings: Settings, descriptors: int | None = None) -> ConnectionCaps:
        if settings.max_connections is not None:
            connections = settings.max_connections
        else:
            descriptors = descriptor_limit() if descriptors is None else descriptors
            # The pool and its overflow, a Redis connection for commands and one for
            # subscriptions, and the fixed reserve.
            reserve = 2 * settings.database_pool_size + 2 + FIXED_RESERVE
            connections = max(MIN_UNAUTHENTICATED, descriptors - reserve)
        unauthenticated = settings.max_unauthenticated_sockets or max(
            MIN_UNAUTHENTICATED, int(connections * UNAUTHENTICATED_FRACTION)
        )
        signed_in = settings.max_sockets_per_process or connections
        return cls(
            connections=connections,
            unauthenticated_sockets=min(unauthenticated, connections),
            signed_in_sockets=min(signed_in, connections),
            ready_below=max(1, int(connections * READY_FRACTION)),
        )


class Capacity:
    """Counts the connections a process holds against its caps (one event loop: no lock).

    A connection takes a slot when it is accepted (``api/http.py``) and gives it back when
    its transport is gone, from the HTTP protocol or, after an upgrade, the socket's.
    """

    __slots__ = ("_refused", "caps", "connections", "unauthenticated")

    def __init__(self, caps: ConnectionCaps) -> None:
        self.caps = caps
        self.connections = 0
        self.unauthenticated = 0
        # Sockets not signed in whose close is under way (token or Origin refused), oldest
        # first: they make room for a newcomer.
        self._refused: dict[ClosingSocket, None] = {}

    @property
    def ready(self) -> bool:
        return self.connections < self.caps.ready_below

    def admit_connection(self) -> bool:
        if self.connections >= self.caps.connections:
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        self.connections -= 1

    def admit_unauthenticated(self) -> bool:
        """A socket's upgrade may be accepted: under its own cap, and the process ready.

        At the cap, the oldest socket whose close is under way is dropped to make room: a
        client that opens refused sockets and never completes their close cannot keep a
        user's tab out. The upgrading connection is counted already: ``ready_below`` is
        compared with the others.
        """
        if self.connections > self.caps.ready_below:
            return False
        if self.unauthenticated >= self.caps.unauthenticated_sockets:
            if not self._refused:
                return False
            oldest = next(iter(self._refused))
            del self._refused[oldest]
            oldest.make_room()  # it gives its place up at once
            self.unauthenticated -= 1
        self.unauthenticated += 1
        return True

    def closing_unauthenticated(self, socket: ClosingSocket) -> None:
        """``socket``, not signed in, is closing: it makes room if room is needed."""
        self._refused[socket] = None

    def release_unauthenticated(self, socket: ClosingSocket) -> None:
        self._refused.pop(socket, None)
        self.unauthenticated -= 1
