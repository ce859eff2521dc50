"""Shared counters without a state-store call per request: increments are summed in the
process and written with `StateStore.add_fields` every `interval_s`, and before any read
(`flush()`), so a reader in this worker sees its own counts exactly and other workers'
within one interval. Used by the cache statistics and the experiment statistics."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from ..errors import StateUnavailable
from .store import StateStore


class BufferedCounters:
    def __init__(self, store: StateStore, interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._pending: dict[str, Counter[str]] = {}

    def add(self, key: str, increments: dict[str, int]) -> None:
        self._pending.setdefault(key, Counter()).update(increments)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, increments in pending.items():
            try:
                await self._store.add_fields(key, dict(increments))
            except StateUnavailable:
                self.add(key, dict(increments))  # kept for the next flush

    async def read(self, key: str) -> dict[str, int]:
        """Every worker's counts under `key` (this worker's pending ones written first)."""
        await self.flush()
        return await self._store.fields(key)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            with contextlib.suppress(StateUnavailable):
                await self.flush()
