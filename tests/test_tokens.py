"""Token verification as configured: public keys, JWKS, pinned algorithms, claims."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from campana import create_app, migrations
from campana.settings import InvalidSettings, Settings, load_settings

from .support.servers import JWT_SECRET, Server

UNREAD = "/api/v1/notifications/unread-count"
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@contextlib.asynccontextmanager
async def app_client(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on a fresh SQLite file, lifespan run, called in-process."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.sqlite3'}"
    await asyncio.to_thread(migrations.upgrade, url)
    app = create_app(Settings(database_url=url, data_dir=tmp_path, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://campana") as client:
            yield client


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 60, **extra}


def hmac_token(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed by hand: PyJWT itself refuses a PEM key as an HMAC secret."""

    def encode(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    signing_input = ".".join(
        encode(json.dumps(p).encode()) for p in ({"alg": "HS256", "typ": "JWT"}, payload)
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{encode(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pem(private_key: Any) -> str:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(public.decode())


EC_PUBLIC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def assert_refused(client: httpx.AsyncClient, token: str) -> None:
    answer = await client.get(UNREAD, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"] == "unauthorized"


async def test_rs256_token_signed_by_the_configured_key_is_accepted(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with app_client(tmp_path, jwt_algorithms=["RS256"], jwt_public_key=pem(rsa_key)) as c:
        accepted = await c.get(UNREAD, headers=bearer(jwt.encode(claims(), rsa_key, "RS256")))
        assert accepted.json() == {"count": 0}
        await assert_refused(c, jwt.encode(claims(), stranger, "RS256"))
        # Key confusion: the public key used as an HMAC secret must not pass.
        await assert_refused(c, hmac_token(claims(), pem(rsa_key).encode()))


async def test_es256_token_is_accepted_with_its_pem_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    async with app_client(tmp_path, jwt_algorithms=["ES256"], jwt_public_key=pem(key)) as c:
        answer = await c.get(UNREAD, headers=bearer(jwt.encode(claims(), key, "ES256")))
        assert answer.status_code == 200


@contextlib.contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[str]:
    body = json.dumps(document).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_jwks_url_serves_the_key_chosen_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    with jwks_server({"keys": [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}) as url:
        async with app_client(tmp_path, jwt_algorithms=["RS256"], jwt_jwks_url=url) as c:
            good = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "k1"})
            assert (await c.get(UNREAD, headers=bearer(good))).status_code == 200
            unknown = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "k2"})
            await assert_refused(c, unknown)


async def test_jwks_token_whose_algorithm_does_not_fit_its_kid_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Identity providers publish RSA and EC keys side by side; a header can mix them."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec"},
    ]
    with jwks_server({"keys": keys}) as url:
        async with app_client(tmp_path, jwt_algorithms=["RS256"], jwt_jwks_url=url) as c:
            await assert_refused(c, jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "ec"}))


async def test_only_the_configured_algorithms_pass(tmp_path: Path) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as c:
        await assert_refused(c, jwt.encode(claims(), SECRET * 2, "HS512"))
        await assert_refused(c, jwt.encode(claims(), None, "none"))  # type: ignore[arg-type]
        assert (
            await c.get(UNREAD, headers=bearer(jwt.encode(claims(), SECRET)))
        ).status_code == 200


async def test_exp_is_required_and_the_leeway_forgives_a_few_seconds(tmp_path: Path) -> None:
    now = int(time.time())
    async with app_client(tmp_path, jwt_secret=SECRET) as c:
        await assert_refused(c, jwt.encode({"sub": "alice"}, SECRET))
        await assert_refused(c, jwt.encode(claims(exp=now - 30), SECRET))
        late = jwt.encode(claims(exp=now - 2), SECRET)
        assert (await c.get(UNREAD, headers=bearer(late))).status_code == 200
    async with app_client(tmp_path, jwt_secret=SECRET, jwt_leeway_seconds=0) as c:
        await assert_refused(c, late)


async def test_a_token_accepted_before_is_refused_once_it_expires(tmp_path: Path) -> None:
    """Verified tokens are remembered for speed, never beyond their ``exp``."""
    async with app_client(tmp_path, jwt_secret=SECRET, jwt_leeway_seconds=0) as c:
        token = jwt.encode(claims(exp=int(time.time()) + 2), SECRET)
        for _ in range(3):
            assert (await c.get(UNREAD, headers=bearer(token))).status_code == 200
        await asyncio.sleep(3)  # timed on purpose: the token's lifetime is what must pass
        await assert_refused(c, token)


async def test_a_user_claim_with_a_nul_character_is_refused(tmp_path: Path) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as c:
        await assert_refused(c, jwt.encode(claims(sub="ali\x00ce"), SECRET))


async def test_audience_and_issuer_are_checked_when_configured(tmp_path: Path) -> None:
    settings = {"jwt_secret": SECRET, "jwt_audience": "campana", "jwt_issuer": "https://id"}
    async with app_client(tmp_path, **settings) as c:
        good = jwt.encode(claims(aud="campana", iss="https://id"), SECRET)
        assert (await c.get(UNREAD, headers=bearer(good))).status_code == 200
        for bad in (
            claims(aud="other", iss="https://id"),
            claims(iss="https://id"),
            claims(aud="campana", iss="https://evil"),
            claims(aud="campana"),
        ):
            await assert_refused(c, jwt.encode(bad, SECRET))
    async with app_client(tmp_path, jwt_secret=SECRET) as c:
        carrying = jwt.encode(claims(aud="anything"), SECRET)
        assert (await c.get(UNREAD, headers=bearer(carrying))).status_code == 200


async def test_a_configured_user_claim_names_the_user(tmp_path: Path) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET, jwt_user_claim="uid") as c:
        producer = jwt.encode(
            {"uid": "svc", "exp": int(time.time()) + 60, "scope": "notifications:send"}, SECRET
        )
        created = await c.post(
            "/api/v1/notifications/",
            json={"user_id": "u-7", "type": "GENERIC_INFO", "message": "hi"},
            headers=bearer(producer),
        )
        assert created.status_code == 201
        user = jwt.encode({"uid": "u-7", "sub": "someone", "exp": int(time.time()) + 60}, SECRET)
        assert (await c.get(UNREAD, headers=bearer(user))).json() == {"count": 1}
        await assert_refused(c, jwt.encode(claims(), SECRET))
        await assert_refused(c, jwt.encode({"uid": 7, "exp": int(time.time()) + 60}, SECRET))


def signed(**claims: Any) -> str:
    """A token the test servers' secret signs: valid but for what a test puts in it."""
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, **claims}, JWT_SECRET)


MALFORMED_CLAIMS: list[tuple[str, dict[str, Any]]] = [
    ("sub-lone-surrogate", {"sub": "\ud800"}),
    ("sub-lone-surrogate-inside", {"sub": "ali\udc00ce"}),
    ("exp-401-digits", {"exp": 10**400}),
    ("exp-numeric-string", {"exp": "9999999999"}),
    ("exp-true", {"exp": True}),
    ("nbf-numeric-string", {"nbf": "1"}),
    ("nbf-true", {"nbf": True}),
    ("iat-numeric-string", {"iat": "1"}),
    ("iat-false", {"iat": False}),
]


@pytest.mark.parametrize(
    "changes", [c for _, c in MALFORMED_CLAIMS], ids=[n for n, _ in MALFORMED_CLAIMS]
)
async def test_a_signed_token_with_a_malformed_claim_is_refused_on_every_road(
    rest_server: Server, changes: dict[str, Any]
) -> None:
    """RFC 7519 dates are JSON numbers, and a user id is text the database can store: 401
    on a user's call and on the producer call, 4401 on the socket; never a 500 or 1011."""
    token = signed(**changes, scope="notifications:send")
    unread = await rest_server.http.get(UNREAD, headers=bearer(token))
    create = await rest_server.http.post(
        "/api/v1/notifications/",
        json={"user_id": "u", "type": "GENERIC_INFO", "message": "m"},
        headers=bearer(token),
    )
    for answer in (unread, create):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"] == "unauthorized"
    async with rest_server.connect_raw(f"?token={token}") as tab:
        assert await tab.close_code() == 4401


async def test_dates_that_are_json_numbers_are_accepted_fractions_too(rest_server: Server) -> None:
    now = time.time()
    token = signed(exp=now + 60.5, nbf=now - 1.5, iat=int(now))
    assert (await rest_server.http.get(UNREAD, headers=bearer(token))).json() == {"count": 0}


@pytest.mark.parametrize(
    ("scope", "status"),
    [("openid notifications:send", 201), (["notifications:send"], 201), ("openid", 403)],
)
async def test_only_the_send_scope_may_create(tmp_path: Path, scope: Any, status: int) -> None:
    async with app_client(tmp_path, jwt_secret=SECRET) as c:
        answer = await c.post(
            "/api/v1/notifications/",
            json={"user_id": "u", "type": "GENERIC_INFO", "message": "hi"},
            headers=bearer(jwt.encode(claims(scope=scope), SECRET)),
        )
        assert answer.status_code == status, answer.text
        if status == 403:
            assert answer.json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"CAMPANA_JWT_ALGORITHMS": "RS256"}, "CAMPANA_JWT_PUBLIC_KEY"),
        ({"CAMPANA_JWT_ALGORITHMS": "none"}, "CAMPANA_JWT_ALGORITHMS"),
        ({"CAMPANA_JWT_ALGORITHMS": "HS256,RS256", "CAMPANA_JWT_PUBLIC_KEY": "x"}, "HMAC"),
        ({"CAMPANA_DATABASE_URL": "mysql://db"}, "CAMPANA_DATABASE_URL"),
        (
            {"CAMPANA_JWT_ALGORITHMS": "RS256", "CAMPANA_JWT_PUBLIC_KEY": "not a PEM key"},
            "CAMPANA_JWT_PUBLIC_KEY is not a PEM public key",
        ),
        (
            {"CAMPANA_JWT_ALGORITHMS": "RS256", "CAMPANA_JWT_PUBLIC_KEY": EC_PUBLIC_PEM},
            "CAMPANA_JWT_PUBLIC_KEY is not a key for RS256",
        ),
    ],
)
def test_bad_security_settings_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], named: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings, match=named):
        load_settings()
