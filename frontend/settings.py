"""Typed settings from the environment (prefix INFERGATE_, nested with __), validated.

INFERGATE_TRITON__URL=127.0.0.1:8001
INFERGATE_TRITON__TIMEOUTS='{"intent": 2.5}'
INFERGATE_LIMITS__MAX_BATCH_ITEMS=128
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .job_settings import JobSettings
from .notify_settings import NotifySettings

# Secrets that were ever published (this project's old development default among them)
# or that people type when asked for one. A start with one of these warns loudly; prod
# refuses it. No code path signs or hashes with a constant: when no secret is configured,
# a random one is generated (see `Settings.secret_generated`).
KNOWN_WEAK_SECRETS = frozenset(
    {
        "dev-only-secret-change-me",
        "changeme",
        "change-me",
        "change-me-please",
        "secret",
        "secretkey",
        "secret-key",
        "supersecret",
        "password",
        "infergate",
        "infergate-secret",
        "test-secret",
        "development",
    }
)
MIN_SECRET_CHARS = 32


def weak_secret_reason(value: str) -> str | None:
    """Why a configured secret is weak, or None. Deliberately simple: known values, too
    short, or too few distinct characters (a repeated pattern)."""
    folded = value.strip().lower()
    if folded in KNOWN_WEAK_SECRETS or folded.rstrip("0123456789") in KNOWN_WEAK_SECRETS:
        return "it is a well-known or published value"
    if len(value) < MIN_SECRET_CHARS:
        return f"it is shorter than {MIN_SECRET_CHARS} characters"
    if len(set(value)) < 10:
        return "it has fewer than 10 distinct characters"
    return None


class TritonSettings(BaseModel):
    url: str = "127.0.0.1:8001"
    # Seconds; every call has a deadline. Per-model overrides in `timeouts`.
    default_timeout_s: float = Field(10.0, gt=0, le=600)
    timeouts: dict[str, Annotated[float, Field(gt=0, le=600)]] = Field(default_factory=dict)
    health_timeout_s: float = Field(1.0, gt=0, le=30)
    # /health/ready is unauthenticated and each check asks Triton 1 + models questions:
    # its answer is reused for this long, so a flood costs Triton at most one check per
    # interval per worker (0: check on every call, concurrent callers still share one).
    ready_cache_s: float = Field(1.0, ge=0, le=30)
    # Retries only for UNAVAILABLE before the request reached Triton (connect failures).
    connect_retries: int = Field(1, ge=0, le=5)
    # gRPC reconnect backoff: the default grows to 120 s, which would keep the frontend
    # failing long after Triton is back (docs/reliability.md: Triton killed).
    max_reconnect_backoff_ms: int = Field(1000, ge=100, le=60_000)
    # Models that must be ready for /health/ready; others only degrade it. Empty: all.
    required_models: list[str] = Field(default_factory=list)
    # Where the generated repository's model cards are read from.
    model_repository: Path = Path("model_repository")
    # The key of Triton's restricted admin APIs (the repository index, read for model
    # states, is one): `serve` makes a random one per launch and gives it to both sides.
    admin_key: SecretStr | None = None

    def timeout_for(self, model: str) -> float:
        return self.timeouts.get(model, self.default_timeout_s)


class RedisSettings(BaseModel):
    url: SecretStr | None = None  # None: in-process state (single worker only)
    socket_timeout_s: float = Field(0.25, gt=0, le=10)
    connect_timeout_s: float = Field(0.25, gt=0, le=10)
    # Upper bound on any one state operation, retries included.
    deadline_s: float = Field(0.5, gt=0, le=10)
    max_connections: int = Field(256, ge=4, le=10_000)


class DatabaseSettings(BaseModel):
    """The system of record (accounts, keys, routing, audit, usage).

    `url`: `postgresql+asyncpg://user:password@host/db` in production, or
    `sqlite+aiosqlite:///path/infergate.db`. None: `serve` uses `.infergate/infergate.db`
    outside prod (prod refuses to start without one); an app built without `serve` keeps
    its records in an in-memory SQLite that ends with the process."""

    url: SecretStr | None = None
    pool_size: int = Field(10, ge=1, le=200)
    max_overflow: int = Field(10, ge=0, le=500)
    # The server cancels any statement running longer (PostgreSQL), and no call waits
    # longer than `deadline_s` in all (connect, pool wait, statement) before 503.
    statement_timeout_s: float = Field(2.0, gt=0, le=60)
    deadline_s: float = Field(3.0, gt=0, le=60)
    connect_timeout_s: float = Field(1.0, gt=0, le=30)
    # Key and user records are held per worker this long (changes made through the API
    # invalidate them at once, through Redis); with the database down, held records keep
    # working for `auth.outage_cache_s`.
    record_cache_s: float = Field(30.0, ge=0, le=3600)
    # Usage ledger: counts are summed per worker and written this often (and at SIGTERM).
    usage_flush_s: float = Field(1.0, gt=0, le=60)


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    max_json_depth: int = Field(64, ge=2, le=512)
    max_batch_items: int = Field(256, ge=1, le=256)  # Triton's max_batch_size is 256
    max_input_chars: int = Field(20_000, ge=1, le=1_000_000)
    max_batch_chars: int = Field(1_000_000, ge=1, le=64_000_000)
    max_top_k: int = Field(20, ge=1, le=1000)
    # The other model kinds (POST /v1/models/{model}/predict). Items per request, bounded
    # by the bundled models' Triton max_batch_size (export/served_catalog.py: ner and pii
    # 64, imagenet 32, summarize 8): the service sends a request's misses as one Triton
    # request, and Triton refuses a larger one whole, in words that name no limit of this
    # API. The card does not carry max_batch_size, so these bounds are where it is kept
    # (tests/unit/test_settings.py checks them against the specs).
    max_entity_items: int = Field(64, ge=1, le=64)
    max_summary_items: int = Field(8, ge=1, le=8)
    max_images: int = Field(16, ge=1, le=32)
    # One image's encoded bytes; the model card's max_image_bytes applies too (the lower).
    max_image_bytes: int = Field(20 << 20, ge=1024, le=48 << 20)
    # The body of a request to an image model, instead of max_body_bytes: multipart carries
    # the images' bytes, JSON their base64 (4/3 of the bytes: 32 MiB holds one 20 MiB image
    # or 24 MiB of images). Below the gRPC channel's 64 MiB message (triton/client.py),
    # which carries the images to Triton in one request.
    max_image_body_bytes: int = Field(32 << 20, ge=1024, le=60 << 20)


class Tier(BaseModel):
    """A fair-use tier. `rate` holds request windows in the `limits` notation ("10/minute",
    "100/day", "5 per 2 seconds"); `tokens_per_day` is the daily budget of generated and
    prompt tokens for the text-generation routes (None: no cap). Batch jobs: input rows
    admitted per UTC day and jobs not yet finished at once, per account (None: no cap)."""

    rate: list[str] = Field(default_factory=list)
    tokens_per_day: int | None = Field(None, ge=0, le=10**15)
    job_rows_per_day: int | None = Field(
        None, ge=0, le=10**12, description="batch-job input rows admitted per UTC day"
    )
    max_concurrent_jobs: int | None = Field(
        None, ge=0, le=100_000, description="batch jobs queued or running at once"
    )

    @field_validator("rate")
    @classmethod
    def parseable(cls, value: list[str]) -> list[str]:
        from limits import parse_many

        for item in value:
            parse_many(item)  # raises ValueError on a bad window
        return value


def _default_tiers() -> dict[str, Tier]:
    return {
        "free": Tier(
            rate=["10/minute", "100/day"],
            tokens_per_day=20_000,
            job_rows_per_day=10_000,
            max_concurrent_jobs=1,
        ),
        "pro": Tier(
            rate=["100/minute", "10000/day"],
            tokens_per_day=2_000_000,
            job_rows_per_day=1_000_000,
            max_concurrent_jobs=4,
        ),
        "enterprise": Tier(
            rate=["1000/minute"],
            tokens_per_day=50_000_000,
            job_rows_per_day=50_000_000,
            max_concurrent_jobs=16,
        ),
        # The bootstrap admin key's tier: operators are not throttled by their own gateway.
        "unlimited": Tier(rate=[], tokens_per_day=None),
    }


class JwtSigningKey(BaseModel):
    kid: str = Field(min_length=1, max_length=64)
    private_key_pem: SecretStr  # Ed25519, PKCS#8 PEM


class JwtSettings(BaseModel):
    issuer: str = "infergate"
    audience: str = "infergate-api"
    access_ttl_s: int = Field(900, ge=30, le=86_400)
    refresh_ttl_s: int = Field(7 * 86_400, ge=60, le=90 * 86_400)
    leeway_s: int = Field(5, ge=0, le=60)
    # Ed25519 keys by kid; tokens are signed with `active_kid` and verified with any key
    # listed, so a key can be rotated in before it signs and kept until its tokens expire.
    # Empty: one key derived from INFERGATE_SECRET_KEY (same in every worker and replica).
    signing_keys: list[JwtSigningKey] = Field(default_factory=list)
    active_kid: str | None = None

    @model_validator(mode="after")
    def active_key_listed(self) -> JwtSettings:
        kids = [k.kid for k in self.signing_keys]
        if len(set(kids)) != len(kids):
            raise ValueError("jwt.signing_keys: duplicate kid")
        if self.active_kid is not None and self.active_kid not in kids:
            raise ValueError("jwt.active_kid names no key in jwt.signing_keys")
        return self


class AuthSettings(BaseModel):
    # Off only for a trusted network in front of the gateway (every caller is then an
    # unthrottled admin); a warning is logged at start.
    enabled: bool = True
    # A key the operator sets (any string of 32+ characters); compared in constant time.
    bootstrap_admin_key: SecretStr | None = None
    bootstrap_admin_tier: str = "unlimited"
    default_tier: str = "free"
    tiers: dict[str, Tier] = Field(default_factory=_default_tiers)
    key_prefix: Literal["ig_live", "ig_test"] = "ig_live"
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    # Redis unreachable: "open" serves with a per-process bucket per principal (limits are
    # then per worker), "closed" answers 503 + Retry-After.
    redis_failure_policy: Literal["open", "closed"] = "open"
    # After a Redis failure, requests stop calling Redis and a background task pings it
    # this often until it answers (no request waits on a dead Redis but the first).
    redis_probe_s: float = Field(0.25, gt=0, le=60)
    # API keys and users this worker holds keep working this long while the database is
    # down (new credentials get 503); fail-open, also while Redis is down (revocations
    # made during a Redis outage reach the other workers within database.record_cache_s).
    outage_cache_s: float = Field(300.0, ge=0, le=86_400)
    # Login throttling (POST /v1/auth/token), all counted before the password is hashed
    # (frontend/auth/login_throttle.py). Per username + client address: a guesser is slowed
    # without locking the owner out from elsewhere.
    login_attempts_per_minute: int = Field(10, ge=1, le=1000)
    # Per client address, whatever the username (spraying many names from one client).
    login_client_attempts_per_minute: int = Field(30, ge=1, le=100_000)
    # Per username from clients not known for it (guessing from many addresses), and all
    # logins from unknown clients together (a flood). A client that logged in as a user
    # within `login_known_client_days` skips both (0: no client is ever known).
    login_user_attempts_per_hour: int = Field(100, ge=1, le=1_000_000)
    login_global_attempts_per_minute: int = Field(600, ge=1, le=10_000_000)
    login_known_client_days: int = Field(30, ge=0, le=365)
    # Password hashes (argon2id, 64 MiB each) at once per worker, and how many attempts may
    # wait for one per lane (known clients and admin work / everyone else) before 503.
    login_hash_concurrency: int = Field(2, ge=1, le=32)
    login_max_waiting: int = Field(8, ge=0, le=1024)
    # last-used time of a key is written at most this often per key and worker.
    last_used_interval_s: float = Field(60.0, ge=0, le=86_400)
    # After POST /v1/keys/{id}/rotate, the old secret keeps working this long by default.
    rotation_grace_s: int = Field(3600, ge=0, le=30 * 86_400)

    @field_validator("bootstrap_admin_key")
    @classmethod
    def bootstrap_key_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("bootstrap_admin_key must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def tiers_known(self) -> AuthSettings:
        for name in (self.bootstrap_admin_tier, self.default_tier):
            if name not in self.tiers:
                raise ValueError(f"tier {name!r} is not defined in auth.tiers")
        return self


class CacheSettings(BaseModel):
    enabled: bool = True
    # "tenant": each account has its own entries (nobody can learn what another tenant
    # asked by timing a hit); "shared": one cache for the whole deployment.
    scope: Literal["tenant", "shared"] = "tenant"
    ttl_s: int = Field(3600, ge=1, le=30 * 86_400)
    # per model
    ttls: dict[str, Annotated[int, Field(ge=1, le=30 * 86_400)]] = Field(default_factory=dict)
    max_memory_items: int = Field(50_000, ge=1, le=10_000_000)  # the in-process LRU (no Redis)


class RoutingSettings(BaseModel):
    # JSON routing defaults (see frontend/routing/config.py and examples/routing.json);
    # None: every served version stable, the highest the default.
    file: Path | None = None
    poll_s: float = Field(0.5, gt=0, le=10)  # how often a worker re-reads admin changes
    max_shadow_in_flight: int = Field(4, ge=1, le=256)
    # Roles whose X-User-Id header names the routing subject (a trusted service calling
    # on behalf of its users); for everyone else the subject is their own account.
    trusted_roles: list[Literal["admin", "user"]] = Field(
        default_factory=lambda: ["admin"]  # type: ignore[arg-type]
    )


class GenerationSettings(BaseModel):
    """The text-generation routes (/v1/chat/completions, /v1/completions)."""

    # SSE comment lines while a stream waits (queue, long prefill), so that proxies and
    # clients do not time out an idle connection.
    keepalive_s: float = Field(15.0, gt=0, le=300)
    # Deadline for the first response (admission) and for the whole generation.
    admission_timeout_s: float = Field(10.0, gt=0, le=120)
    timeout_s: float = Field(300.0, gt=0, le=3600)
    # The longest wait between two responses of one stream (a stalled model).
    idle_timeout_s: float = Field(60.0, gt=0, le=600)
    default_chat_max_tokens: int = Field(256, ge=1, le=1_000_000)
    default_completion_max_tokens: int = Field(16, ge=1, le=1_000_000)  # OpenAI's default
    # Refused in the frontend, before the model's single instance tokenizes anything
    # (a 1 MB prompt held it for 1.4 s): the request body (413) and the prompt's
    # characters, every message's content together (400 prompt_too_long). The body cap
    # leaves room for a prompt at the character cap sent with every character escaped.
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=1 << 20)
    max_prompt_chars: int = Field(16_384, ge=1, le=1_000_000)


class CorsSettings(BaseModel):
    allow_origins: list[str] = Field(default_factory=list)  # empty: CORS off
    allow_credentials: bool = False
    # How long a browser may cache a preflight answer (browsers cap it: Chromium 2 h).
    max_age_s: int = Field(600, ge=0, le=86_400)

    @model_validator(mode="after")
    def no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("CORS: '*' cannot be combined with allow_credentials")
        return self


class ServerSettings(BaseModel):
    """The HTTP server of `python -m frontend serve` (frontend/server/): what closes slow
    or oversized requests before the app sees them. Per worker process."""

    # From a connection's opening (or a kept-alive connection's next first byte) to the
    # end of the request head; an idle new connection is closed at the same deadline.
    header_timeout_s: float = Field(10.0, gt=0, le=60)
    # From the end of the head to the end of the body (a 1 MiB body needs < 1 Mbit/s).
    body_timeout_s: float = Field(15.0, gt=0, le=300)
    # An idle kept-alive connection is closed after this.
    keep_alive_s: float = Field(5.0, gt=0, le=300)
    # The request head (request line + header fields) in bytes, and its field count: 431.
    max_header_bytes: int = Field(64 * 1024, ge=4096, le=1 << 20)
    max_header_fields: int = Field(100, ge=16, le=1000)
    # The request target (path + query): 414.
    max_url_bytes: int = Field(8192, ge=256, le=65_536)
    # Authorization / X-API-Key values: no real credential is longer (431, before parsing).
    max_credential_bytes: int = Field(4096, ge=256, le=65_536)
    # Open connections; past it a new one gets 503 and is closed.
    max_connections: int = Field(1000, ge=1, le=100_000)
    # Strict-Transport-Security goes on every response served over TLS, and on all of them
    # when a TLS-terminating proxy is in front (it cannot be seen from here otherwise).
    behind_tls_proxy: bool = False
    hsts_max_age_s: int = Field(31_536_000, ge=0, le=63_072_000)
    # Serve TLS directly (both or neither).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks):
    # the client address (logs, per-client limits) and the scheme (HSTS) come from them.
    # Never "*": any client could then choose its own address.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # POST /v1/jobs only (uploads of up to 500 MB): instead of `body_timeout_s`, at least
    # `upload_min_bytes_per_window` must arrive in every `upload_window_s`, and the whole
    # body within `upload_timeout_s`, so that a crawling upload is still closed soon.
    upload_window_s: float = Field(
        15.0, gt=0, le=300, description="seconds per progress window of a job upload"
    )
    upload_min_bytes_per_window: int = Field(
        65_536, ge=1, le=1 << 30, description="bytes a job upload must send per window"
    )
    upload_timeout_s: float = Field(
        3600.0, gt=0, le=86_400, description="seconds a whole job upload may take"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def proxies_are_addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError on "*" or a name
        return value

    @model_validator(mode="after")
    def tls_pair(self) -> ServerSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("server.tls_certfile and server.tls_keyfile go together")
        return self


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = True


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value is never echoed in the start-up error (URLs of
    # the database, Redis and the broker may carry passwords). It takes effect only here,
    # on the model validated at the top, not on a nested one.
    model_config = SettingsConfigDict(
        env_prefix="INFERGATE_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
    )

    environment: Literal["dev", "test", "prod"] = "dev"
    # Every signing and hashing key is derived from this. Unset outside prod: a random one
    # for this process only (`serve` generates one and keeps it in .infergate/secret.key).
    secret_key: SecretStr | None = None
    triton: TritonSettings = Field(default_factory=TritonSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    _secret_generated: bool = PrivateAttr(default=False)

    @field_validator("secret_key")
    @classmethod
    def secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("secret_key must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def secret_present_and_strong_in_prod(self) -> Settings:
        if self.secret_key is None:
            if self.environment == "prod":
                raise ValueError("INFERGATE_SECRET_KEY must be set in prod")
            self.secret_key = SecretStr(secrets.token_urlsafe(32))
            self._secret_generated = True
        elif self.environment == "prod":
            reason = weak_secret_reason(self.secret_key.get_secret_value())
            if reason is not None:
                raise ValueError(f"INFERGATE_SECRET_KEY is weak: {reason}")
        return self

    @model_validator(mode="after")
    def uploads_outlive_their_deadline(self) -> Settings:
        # An upload streams into a temporary file and holds its Idempotency-Key while it
        # lasts: neither may be taken as abandoned before the upload's own deadline.
        for name in ("tmp_max_age_s", "idempotency_stale_s"):
            if getattr(self.jobs, name) <= self.server.upload_timeout_s:
                raise ValueError(f"jobs.{name} must be above server.upload_timeout_s")
        return self

    @property
    def secret(self) -> str:
        """The server secret (always set after validation)."""
        assert self.secret_key is not None
        return self.secret_key.get_secret_value()

    @property
    def secret_generated(self) -> bool:
        """True when no secret was configured and this process made a random one: keys,
        tokens and routing buckets then last only as long as the process."""
        return self._secret_generated

    def secret_warning(self) -> str | None:
        if self._secret_generated:
            return (
                "INFERGATE_SECRET_KEY is not set: a random secret was generated for this "
                "process; API keys and tokens will not survive a restart and workers will "
                "not agree (`python -m frontend serve` keeps one in .infergate/secret.key)"
            )
        reason = weak_secret_reason(self.secret)
        if reason is not None:
            return (
                f"INFERGATE_SECRET_KEY is weak ({reason}): anyone who guesses it can forge tokens"
            )
        return None
