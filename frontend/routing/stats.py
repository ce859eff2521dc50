"""Experiment and shadow statistics, counted in the state store so that every worker's
requests add up: per variant the requests, errors, a latency histogram (p50 / p95 are read
from it, to the resolution of its buckets) and the predicted-label distribution; per model
the shadow comparisons and agreements. Counted through `BufferedCounters`: a request
never waits for a write."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import Counter
from typing import Any

from ..errors import StateUnavailable
from ..state.counters import BufferedCounters
from ..state.store import StateStore

LATENCY_EDGES_MS = (
    1,
    2,
    5,
    10,
    15,
    20,
    30,
    40,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    2000,
    5000,
    10000,
)


def _percentile(buckets: dict[int, int], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for edge in sorted(buckets):
        seen += buckets[edge]
        if seen >= q * total:
            return float(edge) if edge >= 0 else float("inf")
    return None


class RoutingStats:
    def __init__(self, store: StateStore, counters: BufferedCounters) -> None:
        self._store = store
        self._counters = counters
        self._tasks: set[asyncio.Task[None]] = set()
        self._known: set[tuple[str, str]] = set()

    def _remember_variant(self, experiment: str, variant: str) -> None:
        """Once per worker and variant: the variant joins the experiment's set."""
        if (experiment, variant) in self._known:
            return
        self._known.add((experiment, variant))

        async def run() -> None:
            with contextlib.suppress(StateUnavailable):
                await self._store.add_member(f"exp:{experiment}:variants", variant)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def record(
        self, experiment: str, variant: str, seconds: float, error: bool, labels: list[str]
    ) -> None:
        ms = seconds * 1000
        index = bisect.bisect_left(LATENCY_EDGES_MS, ms)
        edge = LATENCY_EDGES_MS[index] if index < len(LATENCY_EDGES_MS) else -1  # -1: +inf
        fields = {"requests": 1, "errors": int(error), f"lat:{edge}": 1}
        fields.update({f"label:{k}": v for k, v in Counter(labels).items()})
        self._counters.add(f"exp:{experiment}:{variant}", fields)
        self._remember_variant(experiment, variant)

    def record_shadow(self, model: str, compared: int, agreed: int, error: bool) -> None:
        fields = {"requests": 1, "compared": compared, "agreed": agreed, "errors": int(error)}
        self._counters.add(f"shadow:{model}", fields)

    async def experiment(self, name: str) -> dict[str, Any] | None:
        variants = sorted(await self._store.members(f"exp:{name}:variants"))
        if not variants:
            return None
        out = {}
        for variant in variants:
            raw = await self._counters.read(f"exp:{name}:{variant}")
            requests = raw.get("requests", 0)
            buckets = {int(k[4:]): v for k, v in raw.items() if k.startswith("lat:")}
            labels = {k[6:]: v for k, v in raw.items() if k.startswith("label:")}
            out[variant] = {
                "requests": requests,
                "errors": raw.get("errors", 0),
                "error_rate": round(raw.get("errors", 0) / requests, 4) if requests else None,
                "p50_ms": _percentile(buckets, 0.50),
                "p95_ms": _percentile(buckets, 0.95),
                "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
            }
        return out

    async def shadow(self, model: str) -> dict[str, Any]:
        raw = await self._counters.read(f"shadow:{model}")
        compared = raw.get("compared", 0)
        return {
            "requests": raw.get("requests", 0),
            "items_compared": compared,
            "items_agreed": raw.get("agreed", 0),
            "agreement_rate": round(raw.get("agreed", 0) / compared, 4) if compared else None,
            "errors": raw.get("errors", 0),
        }
