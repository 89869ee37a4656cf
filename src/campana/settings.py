"""Every knob of the service, read once from ``CAMPANA_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class InvalidSettings(Exception):
    """Start-up refused: ``str(self)`` is one line naming the bad setting."""


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


@dataclass(frozen=True, slots=True)
class StopPlan:
    """How a stop shares out its one deadline, ``CAMPANA_SHUTDOWN_GRACE_SECONDS``.

    From SIGTERM: every socket is told 1012 at once and aborted by ``sockets_seconds`` if
    its peer does not complete the close; the server waits ``drain_seconds`` for
    connections and requests to end; the services (creates, publisher, hub, broker) stop
    in ``services_seconds``, which ends the grace.
    """

    sockets_seconds: float
    drain_seconds: float
    services_seconds: float

    @classmethod
    def of(cls, grace_seconds: float) -> StopPlan:
        drain_seconds = grace_seconds * 0.75
        return cls(
            sockets_seconds=grace_seconds * 0.5,
            drain_seconds=drain_seconds,
            services_seconds=grace_seconds - drain_seconds,  # what the drain leaves
        )


class Settings(BaseSettings):
    """Campana's configuration. Each field is ``CAMPANA_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CAMPANA_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path("data"),
        description="Folder for the embedded SQLite database and the generated JWT secret.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Unset: SQLite file in DATA_DIR. "
        "`postgresql://` and `sqlite:///` are given their async drivers.",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=1000,
        description="PostgreSQL connections per process (twice as many at peaks).",
    )
    database_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="PostgreSQL connect, query and pool wait limit; past it a call is a 503.",
    )
    redis_url: str | None = Field(
        None, description="Redis for Pub/Sub between processes. Unset: in-process broker."
    )

    jwt_secret: str | None = Field(
        None,
        description="HMAC secret. Unset: generated once into DATA_DIR/jwt-secret (mode 0600).",
    )
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["HS256"],
        description="Accepted algorithms, comma separated. Never taken from the token.",
    )
    jwt_public_key: str | None = Field(None, description="PEM public key for RS*/ES*/EdDSA.")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL of an identity provider.")
    jwt_audience: str | None = Field(None, description="Required `aud` when set.")
    jwt_issuer: str | None = Field(None, description="Required `iss` when set.")
    jwt_user_claim: str = Field("sub", min_length=1, description="Claim naming the user.")
    jwt_leeway_seconds: float = Field(5.0, ge=0, le=300, description="Clock skew allowed.")

    keepalive_seconds: float = Field(25.0, gt=0, le=3600, description="Keepalive frame period.")
    sweep_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Period of the check of every socket against its user's version.",
    )
    snapshot_size: int = Field(20, ge=1, le=100, description="Items in the `snapshot` frame.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed on the socket and by CORS. Empty: any.",
    )
    ws_max_frame_bytes: int = Field(
        4096, ge=64, le=1 << 20, description="Larger client frames close the socket with 1009."
    )
    ws_rate_per_second: float = Field(
        5.0, gt=0, description="Sustained client frames per second before close 1008."
    )
    ws_rate_burst: int = Field(20, ge=1, description="Client frames allowed in a burst.")
    ws_ping_interval_seconds: float = Field(
        20.0, gt=0, description="Protocol-level ping period (dead peer detection)."
    )
    ws_ping_timeout_seconds: float = Field(
        20.0, gt=0, description="A peer that does not answer a ping in time is dropped."
    )
    ws_send_queue_size: int = Field(
        256, ge=8, le=100_000, description="Frames queued per socket before close 1013."
    )
    max_sockets_per_user: int = Field(
        20, ge=1, le=10_000, description="Sockets per user and process; the oldest closes 4429."
    )
    max_sockets_per_process: int | None = Field(
        None,
        ge=1,
        description="Signed-in sockets per process; more are closed with 1013. "
        "Default: `CAMPANA_MAX_CONNECTIONS`.",
    )
    max_connections: int | None = Field(
        None,
        ge=16,
        description="Connections one process holds, HTTP and sockets, signed in or not; more "
        "are answered 503. Default: the file-descriptor limit, less room for the database "
        "pool, Redis and files. Past 90% of it, `/readyz` answers 503 and new sockets are "
        "refused.",
    )
    max_unauthenticated_sockets: int | None = Field(
        None,
        ge=1,
        description="Sockets not signed in (token being checked, or refused and closing); "
        "more are answered 503. Default: a tenth of `CAMPANA_MAX_CONNECTIONS`, at least 16.",
    )
    socket_send_buffer_bytes: int = Field(
        65536, ge=0, description="Kernel send buffer per connection. 0: the OS default."
    )
    ws_close_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A socket whose close has not completed within this is dropped (TCP abort).",
    )
    http_header_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Time for a request's line and headers (a socket's upgrade too) to arrive; "
        "past it the connection is closed, with 408 if the request had begun.",
    )
    http_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Time for a request's body to arrive after its headers; past it, 408.",
    )
    http_idle_timeout_seconds: float = Field(
        5.0, gt=0, le=3600, description="An idle keep-alive connection is closed after this."
    )
    http_write_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="An answer the client does not read for this long is dropped (TCP reset).",
    )
    http_max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1 << 20,
        description="Longest request line and headers (a socket's upgrade too); longer: 431.",
    )
    http_max_body_bytes: int = Field(
        4 << 20,
        ge=1024,
        le=256 << 20,
        description="Largest request body, refused with 413 while it is read.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses of reverse proxies whose `X-Forwarded-For` and "
        "`X-Forwarded-Proto` are believed; `*` for any. Empty: the peer's address is used.",
    )
    metrics_token: str | None = Field(
        None,
        min_length=16,
        description="When set, `/metrics` needs `Authorization: Bearer <token>`.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, gt=0, le=600, description="Time to close sockets and finish requests on SIGTERM."
    )
    log_format: Literal["text", "json"] = Field("text", description="`json`: one object a line.")
    idempotency_ttl_hours: float = Field(
        24.0, ge=24, description="How long Idempotency-Key answers are kept."
    )
    max_recipients: int = Field(
        10_000, ge=1, le=100_000, description="Most `user_ids` in one producer call."
    )

    @field_validator("jwt_algorithms", "allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is needed")
        for name in value:
            if name not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
                raise ValueError(f"{name!r} is not an accepted algorithm")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite:///", "sqlite+aiosqlite:///"),
        ):
            if value.startswith(plain):
                return driver + value.removeprefix(plain)
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("use a postgresql:// or sqlite:/// URL")
        return value

    @model_validator(mode="after")
    def _keys_match_algorithms(self) -> Settings:
        algorithms = set(self.jwt_algorithms)
        if algorithms & HMAC_ALGORITHMS and algorithms & PUBLIC_KEY_ALGORITHMS:
            raise ValueError(
                "CAMPANA_JWT_ALGORITHMS mixes HMAC and public-key algorithms (key confusion)"
            )
        if algorithms & PUBLIC_KEY_ALGORITHMS and not (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError(
                "CAMPANA_JWT_ALGORITHMS names a public-key algorithm: "
                "set CAMPANA_JWT_PUBLIC_KEY or CAMPANA_JWT_JWKS_URL"
            )
        if self.jwt_public_key:
            _check_public_key(self.jwt_public_key, algorithms & PUBLIC_KEY_ALGORITHMS)
        return self

    @property
    def stop_plan(self) -> StopPlan:
        return StopPlan.of(self.shutdown_grace_seconds)

    @property
    def uses_hmac(self) -> bool:
        return bool(set(self.jwt_algorithms) & HMAC_ALGORITHMS)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'campana.sqlite3'}"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def _check_public_key(pem: str, algorithms: set[str]) -> None:
    """Refuse at start-up a key that every request would then fail on."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ValueError("CAMPANA_JWT_PUBLIC_KEY is not a PEM public key") from None
    for name in algorithms:
        expected: tuple[type, ...]
        if name.startswith(("RS", "PS")):
            expected = (rsa.RSAPublicKey,)
        elif name.startswith("ES"):
            expected = (ec.EllipticCurvePublicKey,)
        else:
            expected = (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
        if not isinstance(key, expected):
            raise ValueError(f"CAMPANA_JWT_PUBLIC_KEY is not a key for {name}")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, or one clear line naming the setting that is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:
            raise InvalidSettings(f"invalid settings: {message}") from None
        name = "CAMPANA_" + str(first["loc"][0]).upper()
        raise InvalidSettings(f"invalid {name}: {message}") from None
