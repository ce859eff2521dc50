"""Schemas of the access-control routes: keys, users, tokens, usage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .common import Strict

Role = Literal["admin", "user"]


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100, examples=["ci pipeline"])
    user_id: str | None = Field(
        None, max_length=32, description="Owner: the key then acts as this user (tier, limits)"
    )
    role: Role = "user"
    tier: str | None = Field(None, max_length=64, description="Default: the configured tier")


class OwnKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100, examples=["laptop"])


class KeyUpdate(Strict):
    tier: str = Field(max_length=64, examples=["pro"])


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
    last_used_at: float | None


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
