"""``check_upgrade``, the socket's opening handshake as a pure function: a table of requests.

Each request of the table in ``tests/support/handshakes.py`` is read as the HTTP parser
hands it over (names lowercased, every header as sent); what that parser refuses itself
(the cases marked ``unparsable``: a header line without a colon, a request line without
a version) is answered 400 before the handshake, as ``tests/test_limits_socket.py`` shows
on a real server.
"""

from __future__ import annotations

import pytest

from campana.api.handshake import Refusal, Upgrade, UpgradeRequest, check_upgrade

from .support.handshakes import (
    ACCEPT,
    BAD_UPGRADES,
    GOOD_HEADERS,
    BadUpgrade,
    UpgradeHead,
    as_params,
    upgrade_head,
)


def parsed(head: UpgradeHead) -> UpgradeRequest:
    """The request as the HTTP parser reads it."""
    method, target, version = head.line.split(" ")
    headers = []
    for line in head.header_lines:
        name, _, value = line.partition(":")
        headers.append((name.lower().encode(), value.strip().encode()))
    return UpgradeRequest(method, target.encode(), version.removeprefix("HTTP/"), headers)


def test_a_good_upgrade_gives_the_token_origin_and_the_rfcs_accept_key() -> None:
    head = upgrade_head({"Origin": "https://app.example"}, query="?token=a%2Bb")
    assert check_upgrade(parsed(head)) == Upgrade(
        token="a+b", origin="https://app.example", accept=ACCEPT.encode()
    )


def test_header_names_are_case_blind_and_token_and_origin_may_be_missing() -> None:
    lowered = tuple(f"{k.lower()}: {v}" for k, v in GOOD_HEADERS.items())
    head = UpgradeHead("GET /api/v1/notifications/ws HTTP/1.1", lowered)
    assert check_upgrade(parsed(head)) == Upgrade(token=None, origin=None, accept=ACCEPT.encode())


@pytest.mark.parametrize("case", as_params(c for c in BAD_UPGRADES if not c.unparsable))
def test_a_bad_upgrade_is_refused_with_a_plain_http_status(case: BadUpgrade) -> None:
    refusal = check_upgrade(parsed(case.head))
    assert isinstance(refusal, Refusal)
    assert refusal.status == case.status
    if case.status == 426:
        assert refusal.headers == "Sec-WebSocket-Version: 13\r\n"
