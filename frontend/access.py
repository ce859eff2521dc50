"""Everything access control needs, built once per app in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from .auth.authenticate import Authenticator
from .auth.jwt_keys import SigningKeys
from .auth.keys import ApiKeys
from .auth.login_throttle import LoginThrottle
from .auth.passwords import Passwords
from .auth.tokens import Tokens
from .auth.users import Users
from .db.database import Database
from .observability.metrics import Metrics
from .ratelimit.limiter import RateLimiter
from .ratelimit.quota import TokenQuota
from .settings import Settings
from .state.store import StateStore


@dataclass(slots=True)
class Access:
    store: StateStore
    keys: ApiKeys
    users: Users
    tokens: Tokens
    authenticator: Authenticator
    limiter: RateLimiter
    quota: TokenQuota
    logins: LoginThrottle

    @classmethod
    def build(
        cls, settings: Settings, store: StateStore, database: Database, metrics: Metrics
    ) -> Access:
        auth = settings.auth
        secret = settings.secret
        fail_open = auth.redis_failure_policy == "open"
        held_s, outage_s = settings.database.record_cache_s, auth.outage_cache_s
        passwords = Passwords(auth.login_hash_concurrency, auth.login_max_waiting)
        users = Users(database, store, passwords, held_s=held_s, outage_s=outage_s)
        keys = ApiKeys(
            database,
            store,
            secret,
            auth.key_prefix,
            held_s=held_s,
            outage_s=outage_s,
            last_used_interval_s=auth.last_used_interval_s,
        )
        tokens = Tokens(auth.jwt, SigningKeys(auth.jwt, secret), store, users, fail_open)
        return cls(
            store=store,
            keys=keys,
            users=users,
            tokens=tokens,
            authenticator=Authenticator(auth, secret, keys, tokens, metrics),
            limiter=RateLimiter(auth.tiers, store, fail_open, metrics),
            quota=TokenQuota(auth.tiers, store, fail_open, metrics),
            logins=LoginThrottle(auth, store, secret),
        )
