"""The in-process store forgets what has expired: a flood of one-off keys (a login flood
from many addresses, a limiter window per caller) does not grow memory without bound."""

from __future__ import annotations

import asyncio

import pytest

from frontend.state.memory import SWEEP_MIN, MemoryStore
from frontend.state.store import Window

from .clock import FakeClock, fake_monotonic


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, start=100.0)


def test_expired_windows_and_values_are_swept(clock):
    store = MemoryStore()

    async def flood(prefix: str, n: int) -> None:
        for i in range(n):
            await store.hit_windows([Window(f"{prefix}:w:{i}", 5, 60)])
            await store.put(f"{prefix}:v:{i}", b"x", ttl_s=60)

    asyncio.run(flood("a", 3 * SWEEP_MIN))
    assert len(store._counters) + len(store._values) == 6 * SWEEP_MIN  # all still live
    clock.now += 61  # every one of them expired
    asyncio.run(flood("b", SWEEP_MIN))
    total = len(store._counters) + len(store._values)
    assert total <= 2 * SWEEP_MIN, total  # only the live "b" keys remain
    assert not any(k.startswith("a:") for k in [*store._counters, *store._values])


def test_values_without_ttl_and_live_windows_survive_a_sweep(clock):
    store = MemoryStore()

    async def run() -> None:
        await store.put("keep", b"forever")
        await store.hit_windows([Window("live", 5, 3600)])
        for i in range(2 * SWEEP_MIN):
            await store.put(f"short:{i}", b"x", ttl_s=1)
        clock.now += 2
        for i in range(2 * SWEEP_MIN):
            await store.put(f"again:{i}", b"x", ttl_s=1)
        assert await store.get("keep") == b"forever"
        hit = await store.hit_windows([Window("live", 5, 3600)])
        assert hit.counts == (2,)  # the window kept its count

    asyncio.run(run())
