"""An API key's own limits on top of its account's tier (KeyLimits): requests per minute
counted with the tier's windows all or nothing, tokens per minute reserved and settled
with the daily quota, concurrent requests as slots held for the whole request (a stream
to its end) — in process, with the failure policy when the shared state is down. Their
twins against real Redis, across two stores: tests/integration/test_key_limits.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from fastapi import Depends, FastAPI
from sse_starlette import ServerSentEvent

from frontend import handlers
from frontend.auth.principal import KeyLimits, Principal
from frontend.errors import BadRequest, QuotaExceeded, RateLimited, StateUnavailable
from frontend.middleware.disconnect import DisconnectCancelMiddleware
from frontend.observability.metrics import Metrics
from frontend.ratelimit.concurrency import ConcurrencyLimiter
from frontend.ratelimit.limiter import RateLimiter
from frontend.ratelimit.quota import TokenQuota
from frontend.settings import Tier
from frontend.sse import EventStream, data
from frontend.state.memory import MemoryStore

from .clock import FakeClock, fake_monotonic

TIERS = {
    "t": Tier(rate=["5/minute", "8/hour"], tokens_per_day=1_000),
    "unlimited": Tier(rate=[], tokens_per_day=None),
}
STATE_OPS = (
    "hit_windows",
    "peek_windows",
    "reserve_daily",
    "adjust",
    "daily_used",
    "reserve_window",
    "adjust_window",
    "window_used",
    "acquire_slot",
    "renew_slot",
    "release_slot",
)


def key(key_id: str = "k1", tier: str = "t", account: str | None = None, **limits: Any):
    """An API key's principal; its account is itself (a standalone key) unless given."""
    subject = f"key:{key_id}"
    return Principal(
        subject,
        "api_key",
        "user",
        tier,
        subject,
        account=account or subject,
        key_id=key_id,
        limits=KeyLimits(**limits) if limits else None,
    )


class DownStore(MemoryStore):
    """Every shared-state call fails as an unreachable Redis does (through the guard)."""

    def __init__(self) -> None:
        super().__init__()

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StateUnavailable("shared state is unreachable")

        for name in STATE_OPS:
            setattr(self, name, down)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, start=100.0)


def limiter(store: MemoryStore | None = None, fail_open: bool = True) -> RateLimiter:
    return RateLimiter(TIERS, store or MemoryStore(), fail_open, Metrics())


def quota(store: MemoryStore | None = None, fail_open: bool = True) -> TokenQuota:
    return TokenQuota(TIERS, store or MemoryStore(), fail_open, Metrics())


# --- requests per minute --------------------------------------------------------------


def test_the_keys_minute_refuses_without_using_the_tiers_windows(clock):
    async def run() -> None:
        lim, who = limiter(), key(requests_per_minute=2)
        first = await lim.check(who)
        assert first["RateLimit-Policy"] == (
            '"t.minute";q=5;w=60, "t.hour";q=8;w=3600, "key.minute";q=2;w=60'
        )
        assert (
            first["RateLimit"] == '"t.minute";r=4;t=60, "t.hour";r=7;t=3600, "key.minute";r=1;t=60'
        )
        assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
        await lim.check(who)
        with pytest.raises(RateLimited, match=r"\(key requests per minute\)") as refused:
            await lim.check(who)
        assert refused.value.retry_after == 60
        assert refused.value.headers()["X-RateLimit-Remaining"] == "0"
        used = {s.spec.name: s.used for s in await lim.usage(who)}
        assert used == {"t.minute": 2, "t.hour": 2, "key.minute": 2}  # refusal not counted

    asyncio.run(run())


def test_the_tiers_window_refuses_without_using_the_keys(clock):
    """Two keys of one account: the tier's windows are the account's, each key's minute
    its own; the account's full minute refuses a key with room and charges it nothing."""

    async def run() -> None:
        lim = limiter()
        a = key("a", account="user:u", requests_per_minute=4)
        b = key("b", account="user:u", requests_per_minute=4)
        for who in (a, a, a, b, b):
            await lim.check(who)
        with pytest.raises(RateLimited, match=r"\(t\.minute\)"):
            await lim.check(b)  # the account's 6th this minute; b has used 2 of its 4
        used = {s.spec.name: s.used for s in await lim.usage(b)}
        assert used == {"t.minute": 5, "t.hour": 5, "key.minute": 2}
        clock.now += 60  # a new minute; the hour has 5 of 8
        for _ in range(3):
            await lim.check(b)
        with pytest.raises(RateLimited, match=r"\(t\.hour\)"):
            await lim.check(b)  # b has room (3 of 4) but the account's hour is full
        used = {s.spec.name: s.used for s in await lim.usage(b)}
        assert used == {"t.minute": 3, "t.hour": 8, "key.minute": 3}

    asyncio.run(run())


def test_a_standalone_keys_tier_and_key_windows_are_separate_counters(clock):
    """A standalone key's account is `key:<id>`: its tier window and its own minute are
    two counters. (In process a shared counter would look the same; in Redis it would be
    counted twice per request: tests/integration/test_key_limits.py holds that.)"""

    async def run() -> None:
        lim, who = limiter(), key("solo", requests_per_minute=20)
        for _ in range(5):
            await lim.check(who)
        with pytest.raises(RateLimited, match=r"\(t\.minute\)"):
            await lim.check(who)
        used = {s.spec.name: s.used for s in await lim.usage(who)}
        assert used == {"t.minute": 5, "t.hour": 5, "key.minute": 5}

    asyncio.run(run())


def test_a_key_without_limits_counts_only_the_tier(clock):
    async def run() -> None:
        lim = limiter()
        headers = await lim.check(key(tier="t"))
        assert "key.minute" not in headers["RateLimit-Policy"]
        assert await lim.check(key(tier="unlimited")) == {}  # no windows at all
        # An unlimited tier still has the key's own minute.
        capped = key("c", tier="unlimited", requests_per_minute=1)
        assert (await lim.check(capped))["RateLimit-Policy"] == '"key.minute";q=1;w=60'
        with pytest.raises(RateLimited, match="key requests per minute"):
            await lim.check(capped)

    asyncio.run(run())


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_the_keys_minute_follows_the_failure_policy(clock, policy):
    async def run() -> None:
        lim = limiter(DownStore(), fail_open=policy == "open")
        who = key(tier="unlimited", requests_per_minute=2)
        if policy == "closed":
            with pytest.raises(StateUnavailable):
                await lim.check(who)
            return
        await lim.check(who)  # counted in this process instead
        await lim.check(who)
        with pytest.raises(RateLimited, match="key requests per minute"):
            await lim.check(who)

    asyncio.run(run())


# --- tokens per minute ----------------------------------------------------------------


def test_tokens_per_minute_reserve_refuse_and_settle(clock):
    async def run() -> None:
        q, who = quota(), key(tier="t", tokens_per_minute=100)
        held = await q.reserve(who, 80)
        with pytest.raises(QuotaExceeded, match="key tokens per minute exceeded: 80 of 100") as no:
            await q.reserve(who, 30)
        assert no.value.code == "token_quota_exceeded" and no.value.retry_after == 20  # t=100
        assert (await q.usage(who)).used == 80  # the refused 30 took nothing from the day
        held.used = 25
        await q.settle(held)
        await q.settle(held)  # idempotent
        minute = await q.key_minute_usage(who)
        assert minute is not None and (minute.used, minute.remaining) == (25, 75)
        assert (await q.usage(who)).used == 25  # the day settled too
        async with q.hold(who, 75) as again:  # exactly the rest of the minute
            again.used = 75
        with pytest.raises(QuotaExceeded, match="more than the key's budget"):
            await q.reserve(who, 101)  # can never fit: said so
        clock.now = 120.0  # the next minute
        await q.reserve(who, 100)

    asyncio.run(run())


def test_a_settle_after_the_minute_ended_leaves_the_next_alone(clock):
    """A generation longer than a minute: its settle must not credit (or charge) the
    minute it ends in."""

    async def run() -> None:
        q, who = quota(), key(tier="unlimited", tokens_per_minute=100)
        long = await q.reserve(who, 90)  # minute 60..120 s
        clock.now = 130.0
        await q.reserve(who, 60)  # minute 120..180 s
        long.used = 10
        await q.settle(long)  # 80 back to a minute that is gone
        minute = await q.key_minute_usage(who)
        assert minute is not None and minute.used == 60

    asyncio.run(run())


def test_a_day_that_refuses_charges_the_keys_minute_nothing(clock):
    async def run() -> None:
        q, who = quota(), key(tier="t", tokens_per_minute=5_000)  # the day: 1 000
        with pytest.raises(QuotaExceeded, match="daily token quota"):
            await q.reserve(who, 1_001)
        assert (await q.key_minute_usage(who)).used == 0  # type: ignore[union-attr]
        assert await q.key_minute_usage(key(tier="t")) is None  # no per-minute budget

    asyncio.run(run())


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_tokens_per_minute_follow_the_failure_policy(clock, policy):
    async def run() -> None:
        q = quota(DownStore(), fail_open=policy == "open")
        who = key(tier="unlimited", tokens_per_minute=100)
        if policy == "closed":
            with pytest.raises(StateUnavailable):
                await q.reserve(who, 10)
            return
        held = await q.reserve(who, 90)  # in this process
        assert held.local and held.minute_local
        with pytest.raises(QuotaExceeded, match="key tokens per minute"):
            await q.reserve(who, 20)
        held.used = 10
        await q.settle(held)  # settled where it was reserved
        await q.reserve(who, 90)

    asyncio.run(run())


def test_the_minutes_refusal_gives_the_days_reservation_back(clock):
    async def run() -> None:
        q, who = quota(), key(tier="t", tokens_per_minute=50)
        await q.reserve(who, 50)
        for _ in range(3):
            with pytest.raises(QuotaExceeded, match="per minute"):
                await q.reserve(who, 50)
        assert (await q.usage(who)).used == 50  # only the admitted one

    asyncio.run(run())


# --- concurrent requests --------------------------------------------------------------


def held_slots(store: MemoryStore, key_id: str = "k1") -> int:
    return len(store._live_slots(f"slots:key:{key_id}", time.monotonic()))


def test_slots_refuse_at_max_concurrent_and_come_back_on_any_end():
    async def run() -> None:
        store = MemoryStore()
        slots = ConcurrencyLimiter(store, True, Metrics())
        who = key(max_concurrent=2)
        async with slots.slot(who), slots.slot(who):
            assert held_slots(store) == 2
            with pytest.raises(RateLimited, match="max_concurrent is 2") as full:
                async with slots.slot(who):
                    pass
            assert full.value.headers()["Retry-After"] == "1" and full.value.status == 429
        assert held_slots(store) == 0
        with pytest.raises(BadRequest):  # an error inside the request
            async with slots.slot(who):
                raise BadRequest("no")
        assert held_slots(store) == 0

        entered = asyncio.Event()

        async def request() -> None:
            async with slots.slot(who):
                entered.set()
                await asyncio.Event().wait()  # until cancelled (the client went away)

        task = asyncio.create_task(request())
        await entered.wait()
        assert held_slots(store) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert held_slots(store) == 0
        async with slots.slot(key()):  # no max_concurrent: nothing counted
            assert not store._slots

    asyncio.run(run())


async def _turns(until: Any, limit: int = 100) -> None:
    """Let the event loop run the timers that the fake clock made due, until `until()`."""
    for _ in range(limit):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class RenewCounter(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0

    async def renew_slot(self, key: str, holder: str, lease_ms: int) -> bool:
        self.renewals += 1
        return await super().renew_slot(key, holder, lease_ms)


def test_a_long_request_keeps_its_slot_and_a_crashed_workers_slot_heals(clock):
    async def run() -> None:
        store = RenewCounter()
        slots = ConcurrencyLimiter(store, True, Metrics(), lease_s=30)
        who = key(max_concurrent=1)
        async with slots.slot(who):
            await asyncio.sleep(0)  # the renewer starts: its first sleep from t = 100 s
            for n in range(1, 6):  # 5 x 11 s: well past the first lease's 30 s
                clock.now += 11
                await _turns(lambda n=n: store.renewals >= n)
            with pytest.raises(RateLimited):
                await slots.acquire(who)  # still held
        crashed = await slots.acquire(who)
        assert crashed is not None and crashed.renewer is not None
        crashed.renewer.cancel()  # the worker died: no renewal, no release
        clock.now += 29.9
        with pytest.raises(RateLimited):
            await slots.acquire(who)
        clock.now += 0.2  # its lease has run out
        again = await slots.acquire(who)
        await slots.release(again)
        await slots.release(again)  # idempotent

    asyncio.run(run())


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_slots_follow_the_failure_policy(policy):
    async def run() -> None:
        slots = ConcurrencyLimiter(DownStore(), policy == "open", Metrics())
        who = key(max_concurrent=1)
        if policy == "closed":
            with pytest.raises(StateUnavailable):
                await slots.acquire(who)
            return
        async with slots.slot(who):  # counted in this process
            with pytest.raises(RateLimited):
                await slots.acquire(who)
        async with slots.slot(who):
            pass

    asyncio.run(run())


def test_the_limiter_hands_out_the_keys_slots():
    async def run() -> None:
        lim = limiter()
        async with lim.slot(key(max_concurrent=1)):
            with pytest.raises(RateLimited, match="max_concurrent"):
                async with lim.slot(key(max_concurrent=1)):
                    pass

    asyncio.run(run())


# --- the slot as a FastAPI yield dependency, over a stream ----------------------------


class Asgi:
    """One HTTP request through an ASGI app, driven by hand: the test decides when the
    client disconnects."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path = app, path
        self.messages: list[dict] = []
        self.gone = asyncio.Event()
        self._body_sent = False

    async def _receive(self) -> dict:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        self.messages.append(message)

    async def __call__(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
            "root_path": "",
        }
        await self.app(scope, self._receive, self._send)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


def _streaming_app(
    store: MemoryStore, scope: Literal["function"] | None
) -> tuple[Any, list[int], asyncio.Event]:
    """The dependency the inference routes get (deps.py: `_key_slot`), over a stream that
    records how many of the key's slots are held at each frame."""
    slots = ConcurrencyLimiter(store, True, Metrics())
    who = key(max_concurrent=1)
    seen: list[int] = []
    proceed = asyncio.Event()

    async def key_slot() -> AsyncIterator[None]:
        async with slots.slot(who):
            yield

    app = FastAPI()
    handlers.install(app)
    depends = Depends(key_slot, scope=scope)  # None: FastAPI's default, "request"

    async def frames() -> AsyncIterator[ServerSentEvent]:
        for i in range(3):
            seen.append(held_slots(store))
            yield data({"i": i})
            if i == 0:
                await proceed.wait()

    async def closed() -> None:
        return None

    @app.get("/stream", dependencies=[depends])
    async def stream() -> EventStream:
        return EventStream(frames(), closed, keepalive_s=60)

    @app.get("/fail", dependencies=[depends])
    async def fail() -> None:
        raise BadRequest("refused")

    return DisconnectCancelMiddleware(app), seen, proceed


def test_a_yield_dependency_holds_the_slot_until_the_stream_ends():
    """FastAPI (>= 0.118, default scope "request") runs a yield dependency's exit after
    the response has been sent, a stream's last frame included; scope="function" would
    give the slot back before the first frame."""

    async def run() -> None:
        store = MemoryStore()
        app, seen, proceed = _streaming_app(store, None)
        first = Asgi(app, "/stream")
        task = asyncio.create_task(first())
        await _wait(lambda: seen)  # the first frame is out; the slot is held
        second = Asgi(app, "/stream")
        await second()  # a second stream of the key: refused while the first runs
        assert second.status == 429 and second.headers["retry-after"] == "1"
        assert b"max_concurrent is 1" in second.body
        proceed.set()
        await task
        assert first.status == 200 and seen == [1, 1, 1]
        assert held_slots(store) == 0  # given back once the stream ended
        failing = Asgi(app, "/fail")
        await failing()
        assert failing.status == 400 and held_slots(store) == 0

        early_store = MemoryStore()
        early, early_seen, early_proceed = _streaming_app(early_store, "function")
        early_proceed.set()
        await Asgi(early, "/stream")()
        assert early_seen == [0, 0, 0]  # why the dependency keeps the default scope

    asyncio.run(run())


def test_a_client_gone_mid_stream_gives_the_slot_back():
    async def run() -> None:
        store = MemoryStore()
        app, seen, _ = _streaming_app(store, None)
        client = Asgi(app, "/stream")
        task = asyncio.create_task(client())
        await _wait(lambda: seen)
        assert held_slots(store) == 1
        client.gone.set()  # the disconnect: the middleware cancels the handler
        await task
        assert held_slots(store) == 0 and seen == [1]

    asyncio.run(run())


async def _wait(until: Any) -> None:
    """Poll (real time, bounded) until `until()`: the stream runs in its own task."""
    async with asyncio.timeout(10):
        while not until():
            await asyncio.sleep(0.005)
