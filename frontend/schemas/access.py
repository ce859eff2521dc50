"""Schemas of the access-control routes: keys, users, tokens, usage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from .common import WHOLE, Strict

Role = Literal["admin", "user"]


Route = Literal["predict", "embeddings", "chat", "completions"]
MAX_KEY_LIFE_S = 10 * 366 * 86_400
# Integers that also take an integral float (2.0), as every integer of the API does.
KeyLife = Annotated[int, Field(ge=60, le=MAX_KEY_LIFE_S), WHOLE]
PerMinute = Annotated[int, Field(ge=1, le=1_000_000), WHOLE]
TokensPerMinute = Annotated[int, Field(ge=1, le=100_000_000), WHOLE]
Concurrent = Annotated[int, Field(ge=1, le=10_000), WHOLE]
Grace = Annotated[int, Field(ge=0, le=30 * 86_400), WHOLE]


class KeyScopes(Strict):
    models: list[str] | None = Field(
        None,
        max_length=100,
        description="Models this key may use (and sees in /v1/models); null: every model",
        examples=[["intent", "embed"]],
    )
    routes: list[Route] | None = Field(
        None, max_length=4, description="Inference routes this key may call; null: all"
    )


class KeyLimitsIn(Strict):
    """Limits of this key on top of its account's tier (the stricter one applies)."""

    requests_per_minute: PerMinute | None = None
    tokens_per_minute: TokensPerMinute | None = None
    max_concurrent: Concurrent | None = None


Labels = dict[str, str]
LABELS_DOC = "Free-form labels: up to 20, keys and values up to 64 / 256 characters"


class _KeyOptions(Strict):
    expires_in_s: KeyLife | None = Field(None, description="Refused from this many seconds on")
    scopes: KeyScopes | None = None
    limits: KeyLimitsIn | None = None
    labels: Labels = Field(default_factory=dict, description=LABELS_DOC)

    @field_validator("labels")
    @classmethod
    def labels_bounded(cls, value: Labels) -> Labels:
        return check_labels(value)


def check_labels(value: Labels) -> Labels:
    if len(value) > 20:
        raise ValueError("at most 20 labels")
    for k, v in value.items():
        if not 1 <= len(k) <= 64 or len(v) > 256:
            raise ValueError("label keys are 1-64 characters, values at most 256")
    return value


class KeyCreate(_KeyOptions):
    name: str = Field(min_length=1, max_length=100, examples=["ci pipeline"])
    user_id: str | None = Field(
        None, max_length=32, description="Owner: the key then acts as this user (tier, limits)"
    )
    role: Role = "user"
    tier: str | None = Field(None, max_length=64, description="Default: the configured tier")


class OwnKeyCreate(_KeyOptions):
    name: str = Field(min_length=1, max_length=100, examples=["laptop"])


class KeyUpdate(Strict):
    """Only the fields sent change; `null` clears scopes, limits or expiry (and leaves the
    tier as it is)."""

    tier: str | None = Field(None, max_length=64, examples=["pro"])
    scopes: KeyScopes | None = None
    limits: KeyLimitsIn | None = None
    labels: Labels | None = Field(None, description=LABELS_DOC)
    expires_at: float | None = Field(None, ge=0, description="Epoch seconds; null: never")

    @field_validator("labels")
    @classmethod
    def labels_bounded(cls, value: Labels | None) -> Labels | None:
        return None if value is None else check_labels(value)


class KeyRotate(Strict):
    grace_s: Grace | None = Field(
        None, description="How long the old secret keeps working (default: auth.rotation_grace_s)"
    )


class KeyInfo(BaseModel):
    id: str
    prefix: str
    name: str
    owner: str
    role: Role
    tier: str
    created_at: float
    created_by: str
    revoked_at: float | None
    expires_at: float | None = None
    last_used_at: float | None
    scopes: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    rotated_at: float | None = None
    previous_valid_until: float | None = Field(
        None, description="Until when the secret before the last rotation still works"
    )


class KeyCreated(KeyInfo):
    key: str = Field(description="The secret key. Shown only here, never again.")


class KeyList(BaseModel):
    data: list[KeyInfo]


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(
        min_length=12,
        max_length=256,
        description=(
            "12 to 256 characters after Unicode NFKC normalisation; no control characters,"
            " not whitespace only, not a common password, a run or the username"
        ),
    )
    role: Role = "user"
    tier: str | None = Field(None, max_length=64)


class UserUpdate(Strict):
    tier: str | None = Field(None, max_length=64)
    disabled: bool | None = None


class UserInfo(BaseModel):
    id: str
    username: str
    role: Role
    tier: str
    created_at: float
    disabled: bool


class UserList(BaseModel):
    data: list[UserInfo]


class TokenRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=4096)


class LogoutRequest(Strict):
    refresh_token: str | None = Field(None, max_length=4096)


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_expires_in: int


class WindowUsage(BaseModel):
    name: str = Field(examples=["free.minute"])
    limit: int
    used: int
    remaining: int
    window_s: int
    reset_s: int = Field(description="Seconds until this window resets (Redis server clock)")


class TokenUsage(BaseModel):
    used: int
    limit: int | None
    remaining: int | None
    reset_s: int


class Usage(BaseModel):
    subject: str
    account: str
    kind: str
    role: Role
    tier: str
    requests: list[WindowUsage]
    tokens: TokenUsage


class TierInfo(BaseModel):
    rate: list[str]
    tokens_per_day: int | None


class TierList(BaseModel):
    default_tier: str
    tiers: dict[str, TierInfo]


class ModelCacheStats(BaseModel):
    hits: int
    misses: int
    hit_rate: float | None
    entries: int
    ttl_s: int


class CacheSummary(BaseModel):
    enabled: bool
    backend: str = Field(examples=["redis"])
    scope: str = Field(examples=["tenant"])
    models: dict[str, ModelCacheStats]


class CachePurged(BaseModel):
    purged: int
    model: str | None
    version: str | None
