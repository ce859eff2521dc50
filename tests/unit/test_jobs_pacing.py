"""A worker process's job requests (frontend/jobs/pacing.py): at most `limit` at once;
alone they never pause; a request slower per character than the process's usual cost by
the contention ratio makes them pause for `yield_factor` times its duration, holding the
slot; a batch of longer texts at the usual cost per character is not contention."""

from __future__ import annotations

import asyncio

import pytest

from frontend.jobs.pacing import CONTENDED_HOLD_S, MIN_SAMPLES, WINDOW, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _pacer(clock: Clock, **kw) -> Pacer:
    return Pacer(1, yield_factor=3.0, contention_ratio=1.5, clock=clock, sleep=clock.sleep, **kw)


async def _request(pacer: Pacer, clock: Clock, seconds: float, chars: int) -> None:
    async with pacer.slot(chars):
        clock.now += seconds


def test_alone_a_job_never_pauses():
    async def scenario() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        for i in range(200):
            # Some jitter, and batches of texts of every length: the cost per character
            # stays within the ratio.
            chars = 500 + 37 * (i % 9)
            await _request(pacer, clock, chars * 0.001 * (1 + 0.2 * (i % 3) / 2), chars)
        assert (pacer.pauses, clock.slept) == (0, [])

    asyncio.run(scenario())


def test_two_requests_slowed_by_others_pause_three_times_the_duration():
    async def scenario() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        for _ in range(MIN_SAMPLES):
            await _request(pacer, clock, 0.1, 1000)
        await _request(pacer, clock, 0.16, 1000)  # 1.6 x the cost alone: once may be noise
        assert clock.slept == []
        await _request(pacer, clock, 0.16, 1000)  # twice in a row: others are there
        assert clock.slept == [pytest.approx(0.48)]
        clock.now += CONTENDED_HOLD_S  # the hold over
        await _request(pacer, clock, 0.14, 1000)  # 1.4 x: within the ratio
        assert len(clock.slept) == 1
        await _request(pacer, clock, 0.4, 4000)  # longer texts, the usual cost
        assert len(clock.slept) == 1
        assert pacer.pauses == 1 and pacer.paused_s == pytest.approx(0.48)

    asyncio.run(scenario())


def test_no_pause_before_the_cost_alone_is_known_nor_with_yield_off():
    async def scenario() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        await _request(pacer, clock, 0.1, 1000)
        await _request(pacer, clock, 1.0, 1000)  # slow, but only the second request
        assert clock.slept == []
        off = Pacer(1, yield_factor=0, clock=clock, sleep=clock.sleep)
        for seconds in [0.1] * MIN_SAMPLES + [5.0]:
            await _request(off, clock, seconds, 1000)
        assert clock.slept == []

    asyncio.run(scenario())


def test_the_cost_alone_is_of_the_last_window_of_requests():
    pacer = Pacer(1, yield_factor=1.0, contention_ratio=1.5)
    assert pacer.pause_after(0.01, 1000) == 0  # a fast one, long ago
    # While it is in the window, the slower requests count as slowed by others.
    paused = [pacer.pause_after(0.1, 1000) for _ in range(WINDOW)]
    assert paused[MIN_SAMPLES - 2] == 0  # the first slowed one: maybe noise
    assert paused[MIN_SAMPLES - 1] == pytest.approx(0.1) and paused[-1] == 0
    # The fast request has left the window: 0.1 s per 1000 characters is the usual now.
    assert pacer.pause_after(0.12, 1000) == 0
    assert pacer.pause_after(0.2, 1000) == 0
    assert pacer.pause_after(0.2, 1000) == pytest.approx(0.2)
    assert pacer.pause_after(5.0, 1000) == 2.0  # at most the hold, not 5 s


def test_at_most_limit_requests_at_once_and_a_pause_holds_the_slot():
    async def scenario() -> None:
        pacer = Pacer(2, yield_factor=0)
        inside = peak = 0

        async def one() -> None:
            nonlocal inside, peak
            async with pacer.slot(10):
                inside += 1
                peak = max(peak, inside)
                # 10 ms inside the slot, so that the ten requests overlap.
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(one() for _ in range(10)))
        assert peak == 2

        order: list[str] = []
        gate = asyncio.Event()
        clock = Clock()

        async def paused_sleep(seconds: float) -> None:
            order.append("pause")
            await gate.wait()
            order.append("pause over")

        holder = Pacer(1, yield_factor=1.0, clock=clock, sleep=paused_sleep)
        for _ in range(MIN_SAMPLES):
            holder.pause_after(0.001, 1000)
        holder.pause_after(1.0, 1000)  # a first slowed one

        async def slow() -> None:
            async with holder.slot(1000):
                clock.now += 1.0  # 1 s for 1000 characters: slowed

        async def next_one() -> None:
            async with holder.slot(1000):
                order.append("next request")

        first = asyncio.ensure_future(slow())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(next_one())
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["pause"]  # the next request waits while the slot is held
        gate.set()
        await asyncio.gather(first, second)
        assert order[:3] == ["pause", "pause over", "next request"]

    asyncio.run(scenario())


def test_while_contended_batches_are_short_and_pause_then_a_full_one_probes():
    async def scenario() -> None:
        clock = Clock()
        pacer = _pacer(clock)
        assert pacer.batch_rows(32) == 32
        for _ in range(MIN_SAMPLES):
            await _request(pacer, clock, 0.1, 1000)
        await _request(pacer, clock, 0.3, 1000)
        await _request(pacer, clock, 0.3, 1000)  # slowed twice: contended for the hold
        assert pacer.contended and pacer.batch_rows(32) == 8 and pacer.batch_rows(2) == 1
        async with pacer.slot(250, full=False):  # a short batch pauses too
            clock.now += 0.05
        assert clock.slept[-1] == pytest.approx(0.15)
        clock.now += CONTENDED_HOLD_S
        assert not pacer.contended and pacer.batch_rows(32) == 32  # the probe
        await _request(pacer, clock, 0.1, 1000)  # at the usual cost: alone again
        assert not pacer.contended
        pauses = pacer.pauses
        async with pacer.slot(250, full=False):  # short and alone: no pause
            clock.now += 0.05
        assert pacer.pauses == pauses

    asyncio.run(scenario())


def test_online_traffic_beside_makes_the_job_yield_whatever_its_timings():
    async def scenario() -> None:
        clock = Clock()
        busy = [False]
        pacer = _pacer(clock, online=lambda: busy[0])
        for _ in range(MIN_SAMPLES):
            await _request(pacer, clock, 0.1, 1000)
        assert clock.slept == [] and pacer.batch_rows(32) == 32
        busy[0] = True
        assert pacer.batch_rows(32) == 8
        await _request(pacer, clock, 0.1, 1000)  # at the usual cost: yields all the same
        assert clock.slept == [pytest.approx(0.3)]
        busy[0] = False
        await _request(pacer, clock, 0.1, 1000)
        assert len(clock.slept) == 1 and pacer.batch_rows(32) == 32
        # With the frontend's word, the job's own timings decide nothing.
        for _ in range(3):
            await _request(pacer, clock, 0.5, 1000)
        assert len(clock.slept) == 1 and not pacer.contended

    asyncio.run(scenario())
