"""``check_upgrade``, the socket's opening handshake as a pure function: a table of requests.

Each request is written as a head and read as the HTTP parser hands it over (names
lowercased, every header as sent); what that parser refuses itself (a header line without
a colon, a request line without a version) is answered 400 before the handshake, as
``tests/test_limits_socket.py`` shows on a real server.
"""

from __future__ import annotations

import pytest

from campana.api.handshake import Refusal, Upgrade, UpgradeRequest, check_upgrade

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = {
    "Host": "campana",
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
}


def head(
    changes: dict[str, str | None] | None = None,
    *,
    line: str = "GET /api/v1/notifications/ws?token=a%2Bb HTTP/1.1",
    extra: str = "",
) -> UpgradeRequest:
    headers = {k: v for k, v in {**GOOD, **(changes or {})}.items() if v is not None}
    return parsed(line + "".join(f"\r\n{k}: {v}" for k, v in headers.items()) + extra)


def parsed(text: str) -> UpgradeRequest:
    """The request as the HTTP parser reads it."""
    request_line, *lines = text.split("\r\n")
    method, target, version = request_line.split(" ")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.lower().encode(), value.strip().encode()))
    return UpgradeRequest(method, target.encode(), version.removeprefix("HTTP/"), headers)


def test_a_good_upgrade_gives_the_token_origin_and_the_rfcs_accept_key() -> None:
    upgrade = check_upgrade(head({"Origin": "https://app.example"}))
    assert upgrade == Upgrade(
        token="a+b", origin="https://app.example", accept=b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )


def test_header_names_are_case_blind_and_token_and_origin_may_be_missing() -> None:
    lowered = {k.lower(): v for k, v in GOOD.items()}
    request = parsed(
        "GET /api/v1/notifications/ws HTTP/1.1"
        + "".join(f"\r\n{k}: {v}" for k, v in lowered.items())
    )
    assert check_upgrade(request) == Upgrade(
        token=None, origin=None, accept=b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (head(line="POST /api/v1/notifications/ws HTTP/1.1"), 400),
        (head(line="GET /api/v1/notifications/ws HTTP/1.0"), 400),
        (head(line="GET /api/v1/notifications/elsewhere HTTP/1.1"), 404),
        (head({"Host": None}), 400),
        (head({"Host": ""}), 400),
        (head(extra="\r\nHost: other"), 400),
        (head({"Origin": "https://evil.example"}, extra="\r\nOrigin: https://app.example"), 400),
        (head(extra=f"\r\nSec-WebSocket-Key: {KEY}"), 400),
        (head({"Upgrade": None}), 400),
        (head({"Upgrade": "h2c"}), 400),
        (head({"Connection": "keep-alive"}), 400),
        (head({"Sec-WebSocket-Version": "8"}), 426),
        (head({"Sec-WebSocket-Version": None}), 426),
        (head({"Sec-WebSocket-Key": None}), 400),
        (head({"Sec-WebSocket-Key": "c2hvcnQ="}), 400),
        (head({"Sec-WebSocket-Key": "not base64 at all!!!!!!="}), 400),
    ],
    ids=[
        "post",
        "http-1.0",
        "other-path",
        "no-host",
        "empty-host",
        "two-hosts",
        "two-origins",
        "two-keys",
        "no-upgrade",
        "other-upgrade",
        "connection-without-upgrade",
        "version-8",
        "no-version-header",
        "no-key",
        "short-key",
        "key-not-base64",
    ],
)
def test_a_bad_upgrade_is_refused_with_a_plain_http_status(
    request_head: UpgradeRequest, status: int
) -> None:
    refusal = check_upgrade(request_head)
    assert isinstance(refusal, Refusal)
    assert refusal.status == status
    if status == 426:
        assert refusal.headers == "Sec-WebSocket-Version: 13\r\n"
