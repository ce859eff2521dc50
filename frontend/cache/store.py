"""Where cached items live: Redis (shared by every worker and replica) or an in-process
LRU. A cache never breaks serving: when Redis is unreachable a lookup is a miss and a
write is skipped (through the same guard as the rest of the state, so no request waits
on a dead Redis)."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, cast

import redis.asyncio as redis

from ..errors import StateUnavailable
from ..state.guard import RedisGuard

PREFIX = "ig:cache:"


class CacheStore(Protocol):
    name: str

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put_many(self, items: dict[str, bytes], ttl_s: int) -> None: ...

    async def purge(self, model: str | None, version: str | None) -> int: ...

    async def count(self, model: str) -> int: ...


class MemoryCacheStore:
    name = "memory"

    def __init__(self, max_items: int) -> None:
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max_items = max_items

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        out: list[bytes | None] = []
        for key in keys:
            item = self._items.get(key)
            if item is None or item[1] <= now:
                self._items.pop(key, None)
                out.append(None)
            else:
                self._items.move_to_end(key)
                out.append(item[0])
        return out

    async def put_many(self, items: dict[str, bytes], ttl_s: int) -> None:
        expires = time.monotonic() + ttl_s
        for key, value in items.items():
            self._items[key] = (value, expires)
            self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def purge(self, model: str | None, version: str | None) -> int:
        prefix = "" if model is None else f"{model}:" + ("" if version is None else f"{version}:")
        doomed = [k for k in self._items if k.startswith(prefix)]
        for key in doomed:
            del self._items[key]
        return len(doomed)

    async def count(self, model: str) -> int:
        now = time.monotonic()
        return sum(1 for k, (_, e) in self._items.items() if k.startswith(f"{model}:") and e > now)


class RedisCacheStore:
    name = "redis"

    def __init__(self, client: redis.Redis, guard: RedisGuard) -> None:
        self._client = client
        self._guard = guard

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            raw = await self._guard.run(
                "cache_get", lambda: self._client.mget([PREFIX + k for k in keys])
            )
        except StateUnavailable:
            return [None] * len(keys)
        return cast(list[bytes | None], raw)

    async def put_many(self, items: dict[str, bytes], ttl_s: int) -> None:
        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(PREFIX + key, value, ex=ttl_s)
                await pipe.execute()

        with contextlib.suppress(StateUnavailable):  # served anyway; only its reuse is lost
            await self._guard.run("cache_put", write)

    async def _keys(self, pattern: str) -> list[bytes]:
        return [k async for k in self._client.scan_iter(match=pattern, count=1000)]

    async def purge(self, model: str | None, version: str | None) -> int:
        pattern = PREFIX + ("*" if model is None else f"{model}:{version or '*'}:*")
        removed = 0
        # An admin action on possibly many keys: scanned in batches, not under the guard's
        # per-call deadline (but each SCAN and UNLINK has the client's socket timeout).
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += await self._client.unlink(*batch)
                batch = []
        if batch:
            removed += await self._client.unlink(*batch)
        return removed

    async def count(self, model: str) -> int:
        return len(await self._keys(f"{PREFIX}{model}:*"))
