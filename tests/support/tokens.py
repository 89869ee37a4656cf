"""The tokens a test server must refuse, one table for every road that reads one: a REST
call answers 401, a socket closes with 4401. Tokens well signed whose claims are of the
wrong type are ``MALFORMED_CLAIMS`` in ``tests/test_tokens.py``, tried there on every road."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from .servers import JWT_SECRET

# Read once, when the tests are collected: a day ahead keeps a token unexpired through the
# whole run, so that only its named fault can refuse it; a minute behind is past the
# servers' leeway of a few seconds.
_NOW = int(time.time())
_VALID_UNTIL = _NOW + 86_400
_EXPIRED_AT = _NOW - 60


@dataclass(frozen=True)
class BadToken:
    name: str
    token: str | None  # None: no token at all


BAD_TOKENS = (
    BadToken("missing", None),
    BadToken("empty", ""),
    BadToken("malformed", "not-a-jwt"),
    BadToken("bad-signature", jwt.encode({"sub": "u", "exp": _VALID_UNTIL}, "another-secret-" * 3)),
    BadToken("expired", jwt.encode({"sub": "u", "exp": _EXPIRED_AT}, JWT_SECRET)),
    BadToken(
        "alg-none",
        jwt.encode({"sub": "u", "exp": _VALID_UNTIL}, None, algorithm="none"),  # type: ignore[arg-type]
    ),
    BadToken("no-exp", jwt.encode({"sub": "u"}, JWT_SECRET)),
    BadToken("no-sub", jwt.encode({"exp": _VALID_UNTIL}, JWT_SECRET)),
)
