"""The broker's message format, as a table: what ``decode_events`` keeps of a message,
and what it refuses (anything ``encode_events`` did not write)."""

from __future__ import annotations

import pytest

from campana.broker import MalformedMessage, decode_events, encode_events
from campana.protocol import Event, counts_event

A1 = Event("a", 1, "notification.created", '{"event":"notification.created"}', 1.5)
A2 = Event("a", 2, "unread_count.updated", '{"event":"unread_count.updated"}', 1.5)
B1 = Event("b", 7, "notification.read", '{"event":"notification.read"}', 2.0)
ACCENTS = Event("josé-ñ", 3, "notification.created", '{"m":"campaña ✓"}', 0.0)
COUNTS = counts_event("a", 2, range(16), 1.5)


@pytest.mark.parametrize(
    ("events", "wanted", "kept"),
    [
        pytest.param([A1], {"a"}, [A1], id="one event of a wanted user"),
        pytest.param([A1, A2, B1], {"a"}, [A1, A2], id="other users' events are dropped"),
        pytest.param([B1, A1, A2], {"a", "b"}, [B1, A1, A2], id="order kept across users"),
        pytest.param([A1, B1], set(), [], id="no user wanted here"),
        pytest.param([], {"a"}, [], id="an empty publish"),
        pytest.param([ACCENTS], {"josé-ñ"}, [ACCENTS], id="non-ASCII ids and text"),
        pytest.param([A2, COUNTS], {"a"}, [A2, COUNTS], id="every count, as numbers"),
    ],
)
def test_a_message_carries_its_events_unchanged(
    events: list[Event], wanted: set[str], kept: list[Event]
) -> None:
    assert decode_events(encode_events(events), wanted) == kept


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello", id="not JSON"),
        pytest.param(b'{"user_id": "a"}', id="an object, not a list"),
        pytest.param(b'["a", 1, "x", "{}", 0]', id="one record, not a list of them"),
        pytest.param(b'[["a", 1, "x", "{}"]]', id="a record of four fields"),
        pytest.param(b'[[1, 1, "x", "{}", 0]]', id="a user id that is a number"),
        pytest.param(b'[[["a"], 1, "x", "{}", 0]]', id="a user id that is a list"),
        pytest.param(b'[["a", "1", "x", "{}", 0]]', id="a version as a string"),
        pytest.param(b'[["a", true, "x", "{}", 0]]', id="a version as a boolean"),
        pytest.param(b'[["a", 1, "x", {"event": "x"}, 0]]', id="the frame as an object"),
        pytest.param(b'[["a", 1, "x", "{}", "now"]]', id="an instant as a string"),
        pytest.param(
            b'[["a", 1, "counts.updated", "{\\"unread\\": 1}", 0, 1]]',
            id="every count as a payload, not the badge's numbers",
        ),
    ],
)
def test_a_message_not_written_by_campana_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_events(data, {"a"})


def test_a_bad_record_of_another_user_still_fails_the_message() -> None:
    """The shape is checked for every record; only the field types wait for a wanted one."""
    with pytest.raises(MalformedMessage):
        decode_events(b'[["a", 1, "x", "{}", 0], "junk"]', {"b"})
