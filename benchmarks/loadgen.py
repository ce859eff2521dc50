"""Async load generation: closed loop at fixed concurrency, open loop at a fixed arrival
rate. Open-loop latency is measured from each request's *scheduled* send time, so a
stalled server (or a stalled generator) shows up in the percentiles instead of silently
lowering the offered load (coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

Call = Callable[[int], Awaitable[None]]


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    offered_rps: float | None = None  # open loop only
    dropped: int = 0  # open loop: not sent because max_in_flight was reached

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            "offered_rps": self.offered_rps,
            "dropped": self.dropped,
        }


async def closed_loop(call: Call, concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` workers each send the next request when the previous one returns."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                await call(k * 1_000_000 + i)
            except Exception:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return LoadResult(len(latencies), errors, time.perf_counter() - started, latencies)


async def open_loop(
    call: Call, rate: float, seconds: float, max_in_flight: int = 1024
) -> LoadResult:
    """Send request i at start + i / rate whatever happened to the earlier ones."""
    latencies: list[float] = []
    errors = 0
    dropped = 0
    in_flight = 0
    start = time.perf_counter() + 0.01
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors, in_flight
        try:
            await call(i)
        except Exception:
            errors += 1
        else:
            latencies.append((time.perf_counter() - scheduled) * 1000)
        finally:
            in_flight -= 1

    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            dropped += 1
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return LoadResult(len(latencies), errors, elapsed, latencies, offered_rps=rate, dropped=dropped)
