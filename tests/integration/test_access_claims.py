"""Access-control promises that only real Redis can hold (the session's redis-server; no
Triton): the rate-limit Lua script counts every window at once, all or nothing, and the
revocations live in Redis with the TTL the docs give (the users they belong to in SQL, on
each engine). The rest of these promises are held in process by
tests/unit/test_access_claims.py."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from frontend.auth.jwt_keys import SigningKeys
from frontend.auth.passwords import Passwords
from frontend.auth.tokens import Tokens
from frontend.auth.users import Users
from frontend.db.database import Database
from frontend.db.migrate import upgrade
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings, JwtSettings
from frontend.state.guard import RedisGuard
from frontend.state.redis_store import PREFIX, RedisStore
from frontend.state.store import Window

from .conftest import TEST_SECRET, RedisServer

pytestmark = pytest.mark.integration


def _store(redis_server: RedisServer) -> RedisStore:
    import redis.asyncio as aioredis

    return RedisStore(aioredis.from_url(redis_server.url), RedisGuard(Metrics(), 0.5, 0.25))


def test_the_redis_window_script_is_all_or_nothing(redis_server):
    """One script call per request counts every window or none: a request refused by one
    window is not counted in the others (the in-process store's twin:
    tests/unit/test_access.py::test_windows_are_all_or_nothing_and_reset)."""
    run = uuid.uuid4().hex

    async def scenario() -> None:
        store = _store(redis_server)
        try:
            minute, day = Window(f"t:{run}:m", 2, 60), Window(f"t:{run}:d", 3, 3600)
            first = await store.hit_windows([minute, day])
            assert first.allowed and first.counts == (1, 1)
            assert 59_000 < first.reset_ms[0] <= 60_000 and first.reset_ms[1] > 3_599_000
            assert (await store.hit_windows([minute, day])).counts == (2, 2)
            refused = await store.hit_windows([minute, day])  # the minute is full ...
            assert not refused.allowed and refused.counts == (2, 2)
            peek = await store.peek_windows([minute, day])
            assert peek.counts == (2, 2)  # ... and the day was not charged for it
            # The other way round: the day full, the minute not charged.
            wide, narrow = Window(f"t:{run}:w", 10, 60), Window(f"t:{run}:n", 1, 3600)
            assert (await store.hit_windows([wide, narrow])).allowed
            assert not (await store.hit_windows([wide, narrow])).allowed
            assert (await store.peek_windows([wide, narrow])).counts == (1, 1)
            # A cost that does not fit in one window counts in none.
            a, b = Window(f"t:{run}:a", 5, 60), Window(f"t:{run}:b", 100, 60)
            assert not (await store.hit_windows([a, b], cost=6)).allowed
            fits = await store.hit_windows([a, b], cost=5)
            assert fits.allowed and fits.counts == (5, 5)
        finally:
            await store.close()

    asyncio.run(scenario())
    # Each window is one Redis key with an expiry: Redis forgets it on its own.
    client = redis_server.client()
    try:
        for name, seconds in (("m", 60), ("d", 3600)):
            assert 0 < client.pttl(f"{PREFIX}t:{run}:{name}") <= seconds * 1000
    finally:
        client.close()


def test_revocations_live_in_redis_with_their_ttl(redis_server, database_url):
    """Logout and refresh-token reuse write `revoked:<jti>` for an access token's life and
    `family_revoked:<family>` for a refresh token's, each plus the leeway; a used refresh
    token's marker for its remaining life (plus the leeway)."""
    settings = JwtSettings()
    access_life, refresh_life, leeway = (
        settings.access_ttl_s,
        settings.refresh_ttl_s,
        settings.leeway_s,
    )
    name = f"rev{uuid.uuid4().hex[:8]}"
    keys: dict[str, str] = {}

    async def scenario() -> None:
        store = _store(redis_server)
        database = Database(database_url, DatabaseSettings(), Metrics())
        try:
            await upgrade(database.engine)
            users = Users(database, store, Passwords(), held_s=30, outage_s=300)
            tokens = Tokens(settings, SigningKeys(settings, TEST_SECRET), store, users)
            user = await users.create(
                name, "a long enough passphrase", "user", "free", actor="test", request_id=None
            )
            first = tokens.issue(user)
            second = await tokens.refresh(first.refresh_token)
            principal = await tokens.authenticate(second.access_token)
            await tokens.logout(principal, None)
            keys["used"] = f"refresh_used:{tokens.decode(first.refresh_token, 'refresh')['jti']}"
            keys["jti"] = f"revoked:{principal.token_id}"
            keys["family"] = f"family_revoked:{principal.family}"
        finally:
            await store.close()
            await database.close()

    asyncio.run(scenario())
    client = redis_server.client()
    try:
        ttl = {what: client.ttl(PREFIX + key) for what, key in keys.items()}
    finally:
        client.close()
    assert access_life + leeway - 5 <= ttl["jti"] <= access_life + leeway == 905
    assert refresh_life + leeway - 5 <= ttl["family"] <= refresh_life + leeway == 604_805
    # Used a moment after it was issued: its remaining life is (almost) its whole life.
    assert refresh_life + leeway - 5 <= ttl["used"] <= refresh_life + leeway
