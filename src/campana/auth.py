"""Token -> Principal. Verification is strict: algorithms are pinned by configuration."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

import jwt
from jwt.algorithms import HMACAlgorithm

from campana.errors import InvalidToken
from campana.schemas import USER_ID_MAX_CHARS
from campana.settings import Settings

SEND_SCOPE = "notifications:send"
SECRET_FILE_NAME = "jwt-secret"  # noqa: S105 (a file name, not a secret)
# Verified tokens remembered, so a producer calling with the same token again costs a
# dict lookup instead of a signature check and two JSON decodes (over 100 µs in PyJWT).
VERIFIED_CACHE_SIZE = 1024


class _HMACKeyCheckedOnce(HMACAlgorithm):
    """PyJWT's HMAC, with its key checked once per key rather than once per token.

    PyJWT makes sure an HMAC secret is not a PEM, SSH or DER key on every signature, by
    trying to load it as one: 6% of a reconnect storm's CPU. The check and its answer are
    PyJWT's own; only the answer for a key already seen is remembered.
    """

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._prepared) < 16:  # the configured secret, and little else
                self._prepared[key] = prepared
        return prepared


def _check_hmac_keys_once() -> None:
    """Register the HMAC algorithms above in PyJWT's default registry (idempotent)."""
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        if not isinstance(jwt.get_algorithm_by_name(name), _HMACKeyCheckedOnce):
            jwt.unregister_algorithm(name)
            jwt.register_algorithm(name, _HMACKeyCheckedOnce(hash_alg))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    user_id: str
    scopes: frozenset[str]
    expires_at: float

    @property
    def can_send(self) -> bool:
        return SEND_SCOPE in self.scopes


class TokenVerifier:
    """Checks signatures with the configured key; never trusts the token's own header."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._user_claim = settings.jwt_user_claim
        self._leeway = settings.jwt_leeway_seconds
        self._key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        if settings.uses_hmac:
            _check_hmac_keys_once()
            self._key = hmac_secret(settings)
        elif settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, timeout=5)
        else:
            self._key = settings.jwt_public_key
        self._verified: dict[str, Principal] = {}

    async def verify(self, token: str | None) -> Principal:
        if not token:
            raise InvalidToken("missing token")
        principal = self._verified.get(token)
        if principal is not None:
            if time.time() <= principal.expires_at + self._leeway:
                return principal
            del self._verified[token]
            raise InvalidToken("token expired")
        principal = await self._verify_signature(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = principal
        return principal

    async def _verify_signature(self, token: str) -> Principal:
        key = self._key
        if self._jwks is not None:
            # PyJWKClient fetches over blocking HTTP; its cache makes the thread hop rare.
            try:
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWKClientError as error:
                raise InvalidToken(f"no usable signing key: {error}") from None
            except jwt.InvalidTokenError:
                raise InvalidToken("malformed token") from None
            key = signing_key.key
        return self._decode(token, key)

    def _decode(self, token: str, key: Any) -> Principal:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError as error:
            raise InvalidToken(f"invalid token: {error}") from None
        except (TypeError, ValueError):
            # A header naming an algorithm that does not fit its key (RS256 with the kid of
            # an EC key in a JWKS): the token is wrong, not the server.
            raise InvalidToken("invalid token: its algorithm does not fit its key") from None
        user_id = claims.get(self._user_claim)
        if not _is_user_id(user_id):
            raise InvalidToken(
                f"claim {self._user_claim!r} must be 1 to {USER_ID_MAX_CHARS} characters"
                " of valid text, without NUL"
            )
        return Principal(
            user_id=user_id,
            scopes=_scopes(claims.get("scope")),
            expires_at=_expiry(claims),
        )


def _is_user_id(claim: object) -> TypeGuard[str]:
    """What the database stores: 1 to 255 characters, no NUL (PostgreSQL refuses it) and
    no lone surrogate (JSON's ``"\\ud800"``, which no UTF-8 encoder takes)."""
    if not isinstance(claim, str) or not 0 < len(claim) <= USER_ID_MAX_CHARS or "\x00" in claim:
        return False
    try:
        claim.encode()
    except UnicodeEncodeError:
        return False
    return True


def _expiry(claims: dict[str, Any]) -> float:
    """``exp``, once ``exp``, ``nbf`` and ``iat`` are known to be JSON numbers.

    RFC 7519 makes them numbers; PyJWT also takes ``"9999999999"`` and ``true``, through
    ``int()``. An ``exp`` too large for a float is refused rather than overflowing.
    """
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidToken(f"invalid token: claim {name!r} must be a number")
    try:
        return float(claims["exp"])
    except OverflowError:
        raise InvalidToken("invalid token: claim 'exp' is out of range") from None


def _scopes(claim: object) -> frozenset[str]:
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list):
        return frozenset(item for item in claim if isinstance(item, str))
    return frozenset()


def mint_token(
    settings: Settings, user_id: str, *, ttl_seconds: int = 3600, scopes: tuple[str, ...] = ()
) -> str:
    """A token the configured server accepts; development, tests and ``campana send``."""
    if not settings.uses_hmac:
        raise ValueError("minting needs an HMAC algorithm (HS256) and its secret")
    now = int(time.time())
    claims: dict[str, Any] = {
        settings.jwt_user_claim: user_id,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, hmac_secret(settings), algorithm=settings.jwt_algorithms[0])


def hmac_secret(settings: Settings) -> str:
    """The configured secret, or the one generated once into the data folder.

    ``serve`` and ``token`` both call this, so a token minted on the command line is
    accepted by the server without any configuration.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / SECRET_FILE_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several workers start at once, exactly one writes the secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as secret_file:
        secret_file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
