"""How a worker process's job requests share Triton with online traffic (design §5).

Two things bound them. At most `jobs.triton_requests_in_flight` at once (a semaphore):
Triton's priority levels put a job's request behind every online one waiting, but they
do not pre-empt a batch already executing, so this bound keeps instances free. And the
requests yield when online traffic is there: on two cores the same CPUs serve both, so
a job running at full speed takes its share of them however it is queued.

Online traffic shows in the job's own requests: waiting behind online requests at the
higher priority level, and on CPUs the online batches use, each job request takes longer
per character of text than it does alone. So each request's seconds per character are
kept for the last WINDOW requests, and the smallest of them is the cost alone. Two
requests in a row that took more than `contention_ratio` times that mean the model is
busy with others: this process's job requests then pause for `yield_factor` times the
request's duration, at most CONTENDED_HOLD_S (the slot held, so no other chunk of the
process sends meanwhile), which leaves the model to online traffic for most of the time
it is busy. Alone, a job never pauses.

Per character, not per request: a batch of long texts costs more than one of short
ones, and that is not contention. Only full batches (`batch_rows` rows) are measured: a
short batch costs more per character, by its fixed overhead.

Inside the frontend (the in-process executor) online traffic is also known directly:
`online()` says whether an online request came through the frontend's services within
CONTENDED_HOLD_S; the job is contended exactly while it does, and its own timings are not
used (at half the machine's capacity, online requests barely slow a job's batch, yet a
job's batch slows them: measured in benchmarks/jobs.py).

While online traffic is there (for CONTENDED_HOLD_S after a slowed full batch), batches
are also cut to a quarter of `batch_rows` (each then pauses the same way): an online
request that arrives while a job batch executes waits for less. After the hold, the
next full batch probes again; alone, the job is back at full batches and full speed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

WINDOW = 64  # full batches the cost alone is the smallest of
MIN_SAMPLES = 8  # full batches seen before any pause (the cost alone is not known before)
CONTENDED_HOLD_S = 2.0  # short batches, each pausing, this long after a slowed one
SHORT_DIVISOR = 4  # a short batch: batch_rows / this (at least 1 row)
SLOWED_IN_A_ROW = 2  # slowed full batches in a row that mean contention


class Pacer:
    def __init__(
        self,
        limit: int,
        *,
        yield_factor: float = 0.0,
        contention_ratio: float = 1.5,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        online: Callable[[], bool] | None = None,
    ) -> None:
        """`yield_factor` 0: never pause nor shorten batches (only the in-flight bound)."""
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._yield_factor = yield_factor
        self._ratio = contention_ratio
        self._clock = clock
        self._sleep = sleep
        self._costs: deque[float] = deque(maxlen=WINDOW)
        self._contended_until = float("-inf")
        self._online = online
        self._slowed = 0  # full batches in a row slower than the ratio
        self.pauses = 0  # for tests and logs
        self.paused_s = 0.0

    @property
    def contended(self) -> bool:
        if self._yield_factor <= 0:
            return False
        return self._clock() < self._contended_until or (
            self._online is not None and self._online()
        )

    def batch_rows(self, batch_rows: int) -> int:
        """The rows of the next batch: `batch_rows`, or a short batch while contended."""
        return max(1, batch_rows // SHORT_DIVISOR) if self.contended else batch_rows

    @asynccontextmanager
    async def slot(self, chars: int, *, full: bool = True) -> AsyncIterator[None]:
        """One job request of `chars` characters of text (`full`: a whole `batch_rows`
        batch): waits for a slot, and after a request slowed by others pauses before
        giving the slot back."""
        async with self._slots:
            started = self._clock()
            yield  # an error in the request skips the pacing: nothing was measured
            seconds = self._clock() - started
            pause = self._short_pause(seconds)
            if full and not self.contended and self._online is None:
                pause = self.pause_after(seconds, chars)  # measured alone: the cost alone
            if pause > 0:
                self.pauses += 1
                self.paused_s += pause
                await self._sleep(pause)

    def _short_pause(self, seconds: float) -> float:
        return self._capped(seconds) if self.contended else 0.0

    def _capped(self, seconds: float) -> float:
        # At most the hold: a long batch's pause ends when the hold would, and the job
        # looks again (after a 130 ms batch, 50 x would be 6.5 s).
        return min(self._yield_factor * seconds, CONTENDED_HOLD_S)

    def pause_after(self, seconds: float, chars: int) -> float:
        """How long to pause after a full batch of `chars` characters took `seconds`."""
        cost = seconds / max(chars, 1)
        self._costs.append(cost)
        if self._yield_factor <= 0 or len(self._costs) < MIN_SAMPLES:
            return 0.0
        if cost <= self._ratio * min(self._costs):
            self._slowed = 0
            self._contended_until = float("-inf")  # a full batch at the usual cost: alone
            return 0.0
        self._slowed += 1
        if self._slowed < SLOWED_IN_A_ROW:  # one slow batch may be noise (a long GC, say)
            return 0.0
        self._contended_until = self._clock() + CONTENDED_HOLD_S
        return self._capped(seconds)
