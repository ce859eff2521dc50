"""The load generator's statistics and rate control (benchmarks are not tests; this is)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from benchmarks.loadgen import LoadResult, closed_loop, open_loop


def test_percentiles_and_rate():
    result = LoadResult(
        requests=100, errors=0, seconds=4.0, latencies_ms=[float(i) for i in range(1, 101)]
    )
    assert result.rps == 25.0
    assert result.percentile(50) == pytest.approx(50.5)
    assert result.percentile(99) == pytest.approx(99.01)
    summary = result.summary()
    assert summary["p95_ms"] == pytest.approx(95.0, abs=0.1)


def test_closed_loop_keeps_concurrency():
    active = 0
    peak = 0

    async def call(_: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)  # a duration: the fake request takes 10 ms
        active -= 1

    result = asyncio.run(closed_loop(call, concurrency=5, seconds=0.3))
    assert peak == 5
    assert 100 <= result.requests <= 160  # 5 workers x ~30 requests of 10 ms


@pytest.mark.timing  # real time on the event loop: in the serial stage, not beside others
def test_open_loop_holds_the_rate():
    sent: list[float] = []

    async def call(_: int) -> None:
        sent.append(time.perf_counter())
        await asyncio.sleep(0.05)  # slower than the gap: requests overlap, rate holds

    result = asyncio.run(open_loop(call, rate=200, seconds=0.5))
    assert result.requests == 100 and result.offered_rps == 200
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.005, rel=0.2)
    assert result.percentile(50) == pytest.approx(50, abs=15)


def test_open_loop_counts_stalls_in_latency():
    """Coordinated omission: a 300 ms stall must show up in the requests scheduled during it."""

    async def call(i: int) -> None:
        if i == 0:
            time.sleep(0.3)  # blocks the loop: nothing is sent meanwhile

    result = asyncio.run(open_loop(call, rate=100, seconds=0.6))
    assert result.percentile(90) > 100  # a naive send-to-receive timer would say ~0 ms
    assert max(result.latencies_ms) >= 250


def test_open_loop_drops_beyond_max_in_flight():
    async def call(_: int) -> None:
        await asyncio.sleep(1)  # a duration: a slow fake request

    result = asyncio.run(open_loop(call, rate=100, seconds=0.2, max_in_flight=5))
    assert result.dropped == 15 and result.requests == 5
