"""A tab's version rules (``campana.versions``) as a table: for what the tab has been sent,
what each next event's verdict is, and what it then holds."""

from __future__ import annotations

import pytest

from campana.protocol import (
    COUNTS_UPDATED,
    KEEPALIVE,
    NOTIFICATION_CREATED,
    NOTIFICATION_READ,
    NOTIFICATION_UPDATED,
    SNAPSHOT,
    UNREAD_COUNT_UPDATED,
    USER_VERSION,
    Event,
)
from campana.versions import TabVersions, Verdict

SEND, HELD, GAP, BEHIND = Verdict.SEND, Verdict.HELD, Verdict.GAP, Verdict.BEHIND


def event(name: str, version: int, part: int = 0) -> Event:
    return Event("u", version, name, "{}", part=part)


def snapshot(version: int) -> Event:
    return event(SNAPSHOT, version)


def count(version: int) -> Event:
    return event(UNREAD_COUNT_UPDATED, version)


def created(version: int) -> Event:
    return event(NOTIFICATION_CREATED, version)


def read(version: int) -> Event:
    return event(NOTIFICATION_READ, version)


def notice(version: int) -> Event:
    return event(USER_VERSION, version)


def updated(version: int, part: int = 1) -> Event:
    return event(NOTIFICATION_UPDATED, version, part)


def counts(version: int, part: int = 1) -> Event:
    return event(COUNTS_UPDATED, version, part)


KEEPALIVE_EVENT = event(KEEPALIVE, 0)
OPENING = [snapshot(3), count(3)]  # a tab opened at version 3


def opened() -> TabVersions:
    versions = TabVersions()
    assert [versions.admit(e) for e in OPENING] == [SEND, SEND]
    return versions


@pytest.mark.parametrize(
    ("events", "verdicts", "held_seen_top"),
    [
        pytest.param(OPENING, [SEND, SEND], (3, -1, 3), id="the opening: snapshot, then count"),
        pytest.param([created(4), count(4)], [SEND, SEND], (4, 4, 4), id="a change after it"),
        pytest.param([created(4), created(4)], [SEND, HELD], (3, 4, 4), id="a duplicate"),
        pytest.param([count(4), count(3)], [SEND, HELD], (4, -1, 4), id="a count going back"),
        pytest.param([count(3)], [HELD], (3, -1, 3), id="the count it holds, again"),
        pytest.param([created(5)], [GAP], (3, -1, 3), id="a version missing"),
        pytest.param([created(4), created(5)], [SEND, SEND], (3, 5, 5), id="in order"),
        pytest.param([created(2)], [SEND], (3, 2, 3), id="older than its snapshot, not seen"),
        pytest.param([snapshot(2)], [HELD], (3, -1, 3), id="an older snapshot queued behind"),
        pytest.param(
            [snapshot(5), count(5)], [SEND, SEND], (5, -1, 5), id="a newer snapshot, its count"
        ),
        pytest.param([notice(4)], [BEHIND], (3, -1, 3), id="a notice past the tab"),
        pytest.param([notice(3)], [HELD], (3, -1, 3), id="a notice it is up to"),
        pytest.param([KEEPALIVE_EVENT], [SEND], (3, -1, 3), id="a keepalive"),
        pytest.param([read(4), count(4)], [SEND, SEND], (4, 4, 4), id="a read and its count"),
        pytest.param(
            [read(4), count(4), updated(4), counts(4)],
            [SEND] * 4,
            (4, 4, 4),
            id="one change, four parts",
        ),
        pytest.param(
            [read(4), updated(4), read(4), updated(4)],
            [SEND, SEND, HELD, HELD],
            (3, 4, 4),
            id="a change's parts again",
        ),
        pytest.param([updated(4), read(4)], [SEND, HELD], (3, 4, 4), id="a part behind one sent"),
        pytest.param(
            [counts(4), count(4)], [SEND, HELD], (4, -1, 4), id="a count behind every count"
        ),
        pytest.param(
            [snapshot(3), count(3), counts(3)],
            [SEND, SEND, SEND],
            (3, -1, 3),
            id="a snapshot again: both counts follow it",
        ),
    ],
)
def test_each_event_after_the_opening(
    events: list[Event], verdicts: list[Verdict], held_seen_top: tuple[int, int, int]
) -> None:
    versions = TabVersions() if events is OPENING else opened()
    assert [versions.admit(e) for e in events] == verdicts
    assert (versions.held, versions.seen, versions.top) == held_seen_top


def test_behind_a_failed_reload_a_gap_goes_out_and_the_tab_still_counts_as_lacking() -> None:
    versions = opened()
    versions.behind = True
    assert versions.admit(created(6)) is SEND
    assert versions.lacks(0)


@pytest.mark.parametrize(
    ("waiting", "fills"),
    [
        pytest.param([created(4), count(4)], True, id="the next version"),
        pytest.param([created(5)], False, id="one still missing"),
        pytest.param([created(4), created(5), count(5)], True, id="a run"),
        pytest.param([KEEPALIVE_EVENT, notice(9), created(4)], True, id="keepalive, notice aside"),
        pytest.param([created(2)], True, id="nothing past it"),
    ],
)
def test_what_waits_fills_the_gap(waiting: list[Event], fills: bool) -> None:
    assert opened().fills_gap(waiting) is fills


@pytest.mark.parametrize(
    ("event_", "more"),
    [(notice(4), True), (notice(3), False), (created(9), False)],
    ids=["past it", "up to it", "not a notice"],
)
def test_a_notice_announces_more_only_past_the_tab(event_: Event, more: bool) -> None:
    assert opened().announces_more(event_) is more


@pytest.mark.parametrize(("version", "lacks"), [(2, False), (3, False), (4, True)])
def test_a_tab_lacks_what_is_past_the_state_it_holds(version: int, lacks: bool) -> None:
    assert opened().lacks(version) is lacks
