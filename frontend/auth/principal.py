"""Who is calling: what the routes and the rate limiter see once credentials are checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "user"]
# What a key's scopes can name besides models: the routes that do inference.
ScopedRoute = Literal["predict", "embeddings", "chat", "completions"]


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's own limits, on top of its account's tier (None: the tier's only)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None


Kind = Literal["api_key", "user", "bootstrap", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # "key:<id>", "user:<id>", "bootstrap" or "anonymous"
    kind: Kind
    role: Role
    tier: str
    owner: str  # objects this principal creates belong to it; it sees only its own
    token_id: str | None = None  # the access token's jti (JWT callers)
    family: str | None = None  # the login session's refresh family (JWT callers)
    # Whose rate limits and token quota this request counts against: a user's API keys
    # count against the user, and keys minted by a standalone key against that key
    # (minting keys never multiplies anyone's limits).
    account: str = ""
    # API keys only: the key's id, its own limits and its scopes (None: no restriction;
    # a set: only these models / routes).
    key_id: str | None = None
    limits: KeyLimits | None = None
    models: frozenset[str] | None = None
    routes: frozenset[str] | None = None
    expires_at: float | None = None  # the key's expiry: keys it mints expire no later

    def __post_init__(self) -> None:
        if not self.account:
            object.__setattr__(self, "account", self.subject)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
