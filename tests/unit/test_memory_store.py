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


def test_token_windows_are_aligned_and_settle_only_their_own_window(clock):
    """A minute window (aligned: 60..120 s, 120..180 s) counts up to its limit; a settle
    lands in the window it reserved in, never below 0, and not once that window ended."""
    store = MemoryStore()

    async def run() -> None:
        first = await store.reserve_window("tpm:k", 40, 100, 60)  # t = 100 s
        assert first.allowed and first.used == 40 and first.reset_ms == 20_000
        refused = await store.reserve_window("tpm:k", 61, 100, 60)
        assert not refused.allowed and refused.used == 40  # not counted
        assert (await store.reserve_window("tpm:k", 60, 100, 60)).used == 100  # exactly full
        await store.adjust_window(first.window_key, -30)
        assert await store.window_used("tpm:k", 60) == (70, 20_000)
        await store.adjust_window(first.window_key, -1000)
        assert (await store.window_used("tpm:k", 60))[0] == 0  # never below 0
        assert (await store.reserve_window("tpm:k", 10, None, 60)).allowed  # no limit: counts
        clock.now = 120.0  # the next minute
        assert await store.window_used("tpm:k", 60) == (0, 60_000)
        later = await store.reserve_window("tpm:k", 5, 100, 60)
        assert later.window_key != first.window_key
        await store.adjust_window(first.window_key, +50)  # a late settle of the old minute
        assert (await store.window_used("tpm:k", 60))[0] == 5  # the new one owes nothing

    asyncio.run(run())


def test_slots_are_leases_up_to_the_limit(clock):
    store = MemoryStore()

    async def run() -> None:
        assert (await store.acquire_slot("s", "a", 2, 10_000)).held == 1
        assert (await store.acquire_slot("s", "b", 2, 10_000)).allowed
        refused = await store.acquire_slot("s", "c", 2, 10_000)
        assert not refused.allowed and refused.held == 2
        await store.release_slot("s", "a")
        await store.release_slot("s", "a")  # twice: no effect, never below 0
        assert (await store.acquire_slot("s", "c", 2, 10_000)).held == 2
        clock.now += 5
        assert await store.renew_slot("s", "b", 10_000)  # b now ends at t = 115 s
        clock.now += 6  # c's lease (t = 110 s) ran out, b's did not
        assert not await store.renew_slot("s", "c", 10_000)  # dropped, not taken again
        claim = await store.acquire_slot("s", "d", 2, 10_000)
        assert claim.allowed and claim.held == 2  # b and d
        await store.release_slot("s", "b")
        await store.release_slot("s", "d")
        assert "s" not in store._slots  # nothing kept for a key with no slot in flight

    asyncio.run(run())


def test_expired_slot_leases_are_swept(clock):
    store = MemoryStore()

    async def run() -> None:
        for i in range(SWEEP_MIN):
            await store.acquire_slot(f"s:{i}", "leaked", 1, 1_000)  # never released
        clock.now += 2
        for i in range(2 * SWEEP_MIN):
            await store.put(f"v:{i}", b"x", ttl_s=60)  # enough writes to trigger a sweep

    asyncio.run(run())
    assert not store._slots
