"""An API key's record as the auth layer sees it (from its `api_keys` row), and the key
together with what decides whether it may act (its owner user or its parent key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..db.tables import ApiKeyRow
from .principal import KeyLimits, Principal, Role
from .secrets import same
from .users import UserRecord


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    owner: str
    role: Role
    tier: str
    created_at: float
    created_by: str
    digest: str
    revoked_at: float | None = None
    expires_at: float | None = None
    last_used_at: float | None = None
    scopes: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    previous_digest: str | None = None
    previous_valid_until: float | None = None
    rotated_at: float | None = None

    @classmethod
    def of(cls, row: ApiKeyRow) -> KeyRecord:
        return cls(**{name: getattr(row, name) for name in cls.__slots__})

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.id,
            "name": self.name,
            "owner": self.owner,
            "role": self.role,
            "tier": self.tier,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "scopes": self.scopes,
            "limits": self.limits,
            "labels": self.labels,
            "rotated_at": self.rotated_at,
            "previous_valid_until": self.previous_valid_until,
        }

    @property
    def parent_id(self) -> str | None:
        """The key whose account this one shares: set for a key minted through /v1/keys by
        a standalone key (owner `key:<parent>`), None for a standalone or a user's key."""
        if self.owner.startswith("key:") and self.owner != f"key:{self.id}":
            return self.owner.removeprefix("key:")
        return None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def matches(self, digest: str, now: float) -> bool:
        if same(self.digest, digest):
            return True
        return (
            self.previous_digest is not None
            and self.previous_valid_until is not None
            and now < self.previous_valid_until
            and same(self.previous_digest, digest)
        )

    def principal(self, account_tier: str | None = None) -> Principal:
        """A user's key acts as the user, and a key minted by a standalone key acts as that
        key: the owner's tier, limits and quota (`account_tier` is the owner's tier), so
        minting keys never multiplies anyone's limits."""
        scopes = self.scopes or {}
        models, routes = scopes.get("models"), scopes.get("routes")
        extra: dict[str, Any] = {
            "key_id": self.id,
            "limits": KeyLimits(**self.limits) if self.limits else None,
            "models": frozenset(models) if models is not None else None,
            "routes": frozenset(routes) if routes is not None else None,
            "expires_at": self.expires_at,
        }
        if account_tier is not None and (self.owner.startswith("user:") or self.parent_id):
            return Principal(
                f"key:{self.id}",
                "api_key",
                self.role,
                account_tier,
                self.owner,
                account=self.owner,
                **extra,
            )
        # The bootstrap admin's own keys (owner "bootstrap") act as standalone keys: they
        # must not see or manage the bootstrap's other keys.
        owner = f"key:{self.id}" if self.owner == "bootstrap" else self.owner
        return Principal(f"key:{self.id}", "api_key", self.role, self.tier, owner, **extra)


@dataclass(frozen=True, slots=True)
class KeyBundle:
    """A key with what decides whether it may act: its owning user or its parent key."""

    key: KeyRecord
    user: UserRecord | None = None
    parent: KeyRecord | None = None
