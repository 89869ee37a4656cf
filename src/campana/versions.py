"""What one tab holds of its user's changes, and what it may be sent next: pure rules.

Every change of a user carries the next number of the user's version. A tab (one socket)
knows three versions of what it has, and from them each event's :class:`Verdict`:

* ``held``: the state it holds, from its last snapshot or count. A count not newer is
  dropped, so the badge never moves back.
* ``seen``: the newest change whose events it was sent one by one. An event not newer is
  a duplicate and dropped.
* ``top``: the newest version it holds either way. An event more than one past it means
  one went missing (a gap): it waits for the missing one, or the tab's state is read again.

A change may be several events (an item's, then its counts): each has its ``part``, and
the rules order events by version, then part.

Events between ``seen`` and a snapshot are still sent after it: a snapshot holds only the
newest items, not every change. No asyncio here: the hub's ``Connection`` owns the queue
and the timers, and asks these rules what to do. ``tests/test_versions.py`` is their table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from campana.protocol import KEEPALIVE, SNAPSHOT, USER_VERSION, Event


class Verdict(enum.Enum):
    SEND = "send"
    HELD = "held"  # the tab has it already
    GAP = "gap"  # a version before it is missing
    BEHIND = "behind"  # a notice says the user is past what the tab holds


# The most events one change is (``Event.part`` is below it).
PARTS = 8


def _place(event: Event) -> int:
    """Where ``event`` is among its user's events: by version, then by part."""
    return event.version * PARTS + event.part


class TabVersions:
    """The versions one tab holds; :meth:`admit` moves them for each event it lets through."""

    __slots__ = ("_held", "_seen", "behind", "top")

    def __init__(self) -> None:
        # Places (version and part, see ``_place``) of the last count and the last other
        # event sent; before the first snapshot: nothing.
        self._held = -1
        self._seen = -1
        self.top = -1
        # True once events went out past a missing version (its reload failed): the tab may
        # lack something its versions do not show.
        self.behind = False

    @property
    def held(self) -> int:
        """The version of the state the tab holds (its last count's); -1 before any."""
        return self._held // PARTS

    @property
    def seen(self) -> int:
        return self._seen // PARTS

    def admit(self, event: Event) -> Verdict:
        """Whether the tab needs ``event`` now; if so, it is counted as sent."""
        name, version = event.name, event.version
        if name == KEEPALIVE:
            return Verdict.SEND
        if name == SNAPSHOT:
            if version < self.top:  # an older read queued behind a paused transport
                return Verdict.HELD
            self.top = version
            # Its counts follow and go out even at the version the tab holds: clients
            # wait for a count after a snapshot.
            self._held = min(self._held, version * PARTS - 1)
            return Verdict.SEND
        if name == USER_VERSION:
            return Verdict.BEHIND if version > self.top else Verdict.HELD
        place = _place(event)
        if place <= (self._held if event.is_count else self._seen):
            return Verdict.HELD
        if version > self.top + 1 and not self.behind:
            return Verdict.GAP
        self.top = max(self.top, version)
        if event.is_count:
            self._held = place
        else:
            self._seen = max(self._seen, place)
        return Verdict.SEND

    def announces_more(self, event: Event) -> bool:
        """``event`` is a notice of a version past what the tab holds: what led to it was
        lost, not late."""
        return event.name == USER_VERSION and event.version > self.top

    def fills_gap(self, waiting: Iterable[Event]) -> bool:
        """Whether ``waiting`` (in version order) misses no version after what the tab holds."""
        top = self.top
        for event in waiting:
            if event.name in (KEEPALIVE, USER_VERSION):
                continue
            if event.version > top + 1:
                return False
            top = max(top, event.version)
        return True

    def lacks(self, version: int) -> bool:
        """The tab may lack a change up to ``version``."""
        return self.behind or self.held < version
