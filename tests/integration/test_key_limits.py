"""An API key's own limits against real Redis (the session's redis-server; no Triton),
with two `RedisStore`s on two connection pools standing for two workers: the key's
request minute, token minute and concurrency slots stay exact when both hammer one key
at once, the windows and leases expire in Redis on their own, and a dead Redis takes
the failure policy. The in-process twins: tests/unit/test_key_limits.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from frontend.auth.principal import KeyLimits, Principal
from frontend.errors import QuotaExceeded, RateLimited, StateUnavailable
from frontend.observability.metrics import Metrics
from frontend.ratelimit.concurrency import ConcurrencyLimiter
from frontend.ratelimit.limiter import RateLimiter
from frontend.ratelimit.quota import TokenQuota
from frontend.settings import Tier
from frontend.state.guard import RedisGuard
from frontend.state.redis_store import PREFIX, RedisStore
from procs.ports import free_port

from .conftest import RedisServer

pytestmark = pytest.mark.integration
TIERS = {
    "t": Tier(rate=["5/minute"], tokens_per_day=None),
    "unlimited": Tier(rate=[], tokens_per_day=None),
}


# These tests hold atomicity (200 calls at once from two workers), not latency: a deadline
# of 5 s, not the service's 0.5 s, so that a loaded CI machine answering the 200th call
# late does not read as Redis being down (seen once: StateUnavailable on a clean-clone run).
CALL_DEADLINE_S = 5.0


def _store(url: str) -> RedisStore:
    import redis.asyncio as aioredis

    return RedisStore(aioredis.from_url(url), RedisGuard(Metrics(), CALL_DEADLINE_S, 0.25))


def _key(tier: str = "unlimited", **limits: int) -> Principal:
    key_id = uuid.uuid4().hex[:12]  # a fresh key per test: the Redis is the session's
    subject = f"key:{key_id}"
    return Principal(
        subject, "api_key", "user", tier, subject, key_id=key_id, limits=KeyLimits(**limits)
    )


async def _two_workers(
    redis_server: RedisServer, scenario: Callable[[RedisStore, RedisStore], Awaitable[None]]
) -> None:
    first, second = _store(redis_server.url), _store(redis_server.url)
    try:
        await scenario(first, second)
    finally:
        await first.close()
        await second.close()


async def _admitted(calls: list[Awaitable[object]]) -> int:
    results = await asyncio.gather(*calls, return_exceptions=True)
    unexpected = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, RateLimited)
    ]
    assert not unexpected, unexpected
    return sum(not isinstance(r, BaseException) for r in results)


def test_two_workers_never_admit_more_than_the_keys_minute(redis_server):
    who = _key(requests_per_minute=37)

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        workers = [RateLimiter(TIERS, s, False, Metrics()) for s in (a, b)]
        calls = [workers[i % 2].check(who) for i in range(200)]
        assert await _admitted(calls) == 37  # exactly the limit, of 200 at once
        usage = await workers[0].usage(who)
        assert [(s.spec.name, s.used, s.remaining) for s in usage] == [("key.minute", 37, 0)]
        assert 0 < usage[0].reset_s <= 60

    asyncio.run(_two_workers(redis_server, scenario))
    client = redis_server.client()
    try:
        assert 0 < client.pttl(f"{PREFIX}rl:keyrpm:{who.key_id}:60") <= 60_000
    finally:
        client.close()


def test_the_keys_minute_and_its_standalone_tier_window_are_two_counters(redis_server):
    """A standalone key's account is `key:<id>`: its tier window `rl:key:<id>:60` and its
    own minute must not be one Redis key (the script would count it twice a request)."""
    who = _key(tier="t", requests_per_minute=20)  # the tier: 5 a minute

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        limiter = RateLimiter(TIERS, a, False, Metrics())
        assert await _admitted([limiter.check(who) for _ in range(10)]) == 5
        used = {s.spec.name: s.used for s in await limiter.usage(who)}
        assert used == {"t.minute": 5, "key.minute": 5}

    asyncio.run(_two_workers(redis_server, scenario))


def test_two_workers_never_reserve_more_than_the_keys_token_minute(redis_server):
    who = _key(tokens_per_minute=100)

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        workers = [TokenQuota(TIERS, s, False, Metrics()) for s in (a, b)]
        results = await asyncio.gather(
            *(workers[i % 2].reserve(who, 7) for i in range(60)), return_exceptions=True
        )
        held = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, QuotaExceeded)]
        assert len(held) == 14 and len(refused) == 46  # 14 x 7 = 98 of 100
        minute = await workers[1].key_minute_usage(who)
        assert minute is not None and minute.used == 98
        for reservation in held:  # each generation used 2 of its 7
            reservation.used = 2
        await asyncio.gather(*(workers[i % 2].settle(r) for i, r in enumerate(held)))
        minute = await workers[0].key_minute_usage(who)
        assert minute is not None and minute.used == 28

    asyncio.run(_two_workers(redis_server, scenario))


def test_a_token_window_expires_and_a_late_settle_does_not_recreate_it(redis_server):
    """Windows are aligned on the Redis server's clock and expire when they end; a settle
    after the end changes nothing (seconds=1 so the test can see a window end)."""
    key = f"tpm:test:{uuid.uuid4().hex}"

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        first = await a.reserve_window(key, 10, 100, 1)
        assert first.allowed and 0 < first.reset_ms <= 1_000
        await b.adjust_window(first.window_key, -4)  # the other worker settles it
        assert (await a.window_used(key, 1))[0] in (6, 0)  # 0: the second just turned
        await _poll(lambda: _gone(a, first.window_key))
        await b.adjust_window(first.window_key, +50)  # a late settle
        assert await _gone(a, first.window_key)  # not recreated (without an expiry)
        assert (await a.reserve_window(key, 100, 100, 1)).allowed  # a fresh window

    asyncio.run(_two_workers(redis_server, scenario))


async def _gone(store: RedisStore, window_key: str) -> bool:
    return await store.get(window_key) is None


def test_two_workers_never_hold_more_than_max_concurrent(redis_server):
    who = _key(max_concurrent=3)

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        workers = [ConcurrencyLimiter(s, False, Metrics()) for s in (a, b)]
        in_flight, peak = 0, 0

        async def request(worker: ConcurrencyLimiter) -> None:
            nonlocal in_flight, peak
            async with worker.slot(who):
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.01)  # the request's work: others try meanwhile
                in_flight -= 1

        for _ in range(5):  # rounds of 40 at once, from both workers
            served = await _admitted([request(workers[i % 2]) for i in range(40)])
            assert 3 <= served < 40
        assert peak == 3  # reached, never passed
        assert await _held(a, who) == 0  # every slot given back

    asyncio.run(_two_workers(redis_server, scenario))


async def _held(store: RedisStore, who: Principal) -> int:
    # The lease set itself (what acquire_slot counts), read through the store's client.
    return int(await store._client.zcard(f"{PREFIX}slots:key:{who.key_id}"))


def test_a_crashed_workers_slot_comes_back_when_its_lease_ends(redis_server):
    who = _key(max_concurrent=1)

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        crashed = ConcurrencyLimiter(a, False, Metrics(), lease_s=0.5)
        survivor = ConcurrencyLimiter(b, False, Metrics(), lease_s=0.5)
        slot = await crashed.acquire(who)
        assert slot is not None and slot.renewer is not None
        slot.renewer.cancel()  # the worker died: no renewal, no release
        pttl = await a._client.pttl(f"{PREFIX}slots:key:{who.key_id}")
        assert 0 < pttl <= 500  # the set expires with its last lease
        with pytest.raises(RateLimited, match="max_concurrent is 1"):
            await survivor.acquire(who)

        async def free() -> bool:
            try:
                taken = await survivor.acquire(who)
            except RateLimited:
                return False
            await survivor.release(taken)
            return True

        await _poll(free)  # healed, with no release from the crashed worker

    asyncio.run(_two_workers(redis_server, scenario))


def test_a_renewal_extends_a_live_lease_and_never_resurrects_a_released_one(redis_server):
    key = f"slots:test:{uuid.uuid4().hex}"

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        assert (await a.acquire_slot(key, "h", 2, 1_000)).allowed
        assert await b.renew_slot(key, "h", 60_000)
        assert 1_000 < await a._client.pttl(PREFIX + key) <= 60_000  # follows the lease
        await a.release_slot(key, "h")
        assert not await b.renew_slot(key, "h", 60_000)  # a renewal landing late
        assert await _held_key(a, key) == 0
        await a.release_slot(key, "h")  # twice: harmless

    asyncio.run(_two_workers(redis_server, scenario))


async def _held_key(store: RedisStore, key: str) -> int:
    return int(await store._client.zcard(PREFIX + key))


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_an_unreachable_redis_takes_the_failure_policy(policy):
    """Nothing listens on the port: `open` counts the key's limits in this process,
    `closed` answers 503 (StateUnavailable)."""
    who = _key(requests_per_minute=1, tokens_per_minute=10, max_concurrent=1)
    fail_open = policy == "open"

    async def scenario() -> None:
        store = _store(f"redis://127.0.0.1:{free_port()}/0")
        limiter = RateLimiter(TIERS, store, fail_open, Metrics())
        quota = TokenQuota(TIERS, store, fail_open, Metrics())
        try:
            if not fail_open:
                for call in (
                    limiter.check(who),
                    quota.reserve(who, 1),
                    limiter.concurrency.acquire(who),
                ):
                    with pytest.raises(StateUnavailable):
                        await call
                return
            await limiter.check(who)
            with pytest.raises(RateLimited, match="key requests per minute"):
                await limiter.check(who)
            await quota.reserve(who, 10)
            with pytest.raises(QuotaExceeded, match="key tokens per minute"):
                await quota.reserve(who, 1)
            async with limiter.slot(who):
                with pytest.raises(RateLimited, match="max_concurrent"):
                    await limiter.concurrency.acquire(who)
        finally:
            await store.close()

    asyncio.run(scenario())


async def _poll(done: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Until `done()`; the bound only stops a broken test from hanging."""
    async with asyncio.timeout(within_s):
        while not await done():
            await asyncio.sleep(0.05)
