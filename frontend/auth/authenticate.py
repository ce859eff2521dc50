"""Credentials in a request → a Principal, or 401.

Accepted: `X-API-Key: <key>`, or `Authorization: Bearer <key or JWT>`. An `ig_` prefix
marks an API key; anything else after Bearer is read as a JWT."""

from __future__ import annotations

from ..errors import DatabaseUnavailable, StateUnavailable, Unauthorized
from ..observability.metrics import Metrics
from ..settings import AuthSettings
from .keys import ApiKeys
from .principal import Principal
from .secrets import derive, keyed_hash, same
from .tokens import Tokens

ANONYMOUS_ADMIN = Principal("anonymous", "anonymous", "admin", "unlimited", "anonymous")


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        secret_key: str,
        keys: ApiKeys,
        tokens: Tokens,
        metrics: Metrics,
    ) -> None:
        self._enabled = settings.enabled
        self._keys = keys
        self._tokens = tokens
        self._metrics = metrics
        self._bootstrap_hash_key = derive(secret_key, "bootstrap-key")
        self._bootstrap_digest: str | None = None
        if settings.bootstrap_admin_key is not None:
            self._bootstrap_digest = keyed_hash(
                self._bootstrap_hash_key, settings.bootstrap_admin_key.get_secret_value()
            )
        self._bootstrap = Principal(
            "bootstrap", "bootstrap", "admin", settings.bootstrap_admin_tier, "bootstrap"
        )

    @staticmethod
    def credential(authorization: str | None, api_key: str | None) -> str | None:
        if api_key:
            return api_key.strip()
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        return None

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        if not self._enabled:
            return ANONYMOUS_ADMIN
        try:
            presented = self.credential(authorization, api_key)
            if presented is None:
                raise Unauthorized("credentials required: X-API-Key or Authorization: Bearer")
            return await self._resolve(presented)
        except Unauthorized:
            self._metrics.auth_failures.labels("unauthenticated").inc()
            raise
        except StateUnavailable:
            self._metrics.auth_failures.labels("state_unavailable").inc()
            raise
        except DatabaseUnavailable:
            self._metrics.auth_failures.labels("database_unavailable").inc()
            raise

    async def _resolve(self, presented: str) -> Principal:
        if self._bootstrap_digest is not None and same(
            self._bootstrap_digest, keyed_hash(self._bootstrap_hash_key, presented)
        ):
            return self._bootstrap
        if presented.startswith("ig_"):
            bundle = await self._keys.authenticate(presented)
            key = bundle.key
            if bundle.parent is not None:
                # Minted by a standalone key: that key's account, tier and liveness.
                return key.principal(bundle.parent.tier)
            if bundle.user is not None:
                return key.principal(bundle.user.tier)
            return key.principal()
        return await self._tokens.authenticate(presented)
