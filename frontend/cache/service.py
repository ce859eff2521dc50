"""Per-item caching with single-flight.

    outcome = await cache.fetch(
        texts, compute, model=..., version=..., digest=..., params=..., account=..., bypass=...
    )

`compute(indices)` runs the model on those texts only (one Triton request) and returns
one value per index (anything orjson encodes, numpy arrays included); hits come back
decoded from JSON (arrays as lists). Concurrent requests that miss on the same item share one
computation: the first registers a future per item, the others await it. If the request
doing the work is cancelled (client gone), the waiters compute their items themselves.
Nothing is stored unless the computation succeeded for the whole request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..observability.metrics import Metrics
from ..settings import CacheSettings
from ..state.counters import BufferedCounters
from .keys import item_key, params_blob
from .store import CacheStore

STATS = "cache_stats"  # hits and misses per model, from every worker

Compute = Callable[[list[int]], Awaitable[list[Any]]]


class _Abandoned(Exception):
    """The request computing an item went away before it finished."""


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    values: list[Any]
    hits: int
    cacheable: bool  # False when the caller opted out (or caching is off)


class ResultCache:
    def __init__(
        self,
        settings: CacheSettings,
        store: CacheStore,
        counters: BufferedCounters,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self._counters = counters  # hits / misses per model, summed across workers
        self._metrics = metrics
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    def ttl_for(self, model: str) -> int:
        return self.settings.ttls.get(model, self.settings.ttl_s)

    def scope_for(self, account: str) -> str:
        return account if self.settings.scope == "tenant" else "shared"

    async def fetch(
        self,
        texts: Sequence[str],
        compute: Compute,
        *,
        model: str,
        version: str,
        digest: str,  # the artifact's: a rebuilt model never answers from old entries
        params: dict,  # whatever else changes the answer (top_k, ...)
        account: str,  # whose entries, when the scope is per tenant
        bypass: bool,  # the caller asked for no cache: compute, store nothing
    ) -> CacheOutcome:
        if bypass or not self.settings.enabled:
            return CacheOutcome(await compute(list(range(len(texts)))), 0, False)
        blob = params_blob(params)
        scope = self.scope_for(account)
        keys = [item_key(scope, model, version, digest, blob, t) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = dict(zip(unique, await self.store.get_many(unique), strict=True))
        values: dict[str, Any] = {k: orjson.loads(v) for k, v in found.items() if v is not None}
        hits = sum(1 for k in keys if k in values)
        missing = [k for k in unique if k not in values]
        waiting = {k: self._inflight[k] for k in missing if k in self._inflight}
        mine = [k for k in missing if k not in waiting]
        if mine:
            values.update(await self._compute(mine, keys, compute, model))
        for key, future in waiting.items():
            try:
                values[key] = await asyncio.shield(future)
                self._metrics.cache.labels(model, "coalesced").inc()
            except _Abandoned:
                values.update(await self._compute([key], keys, compute, model))
        self._metrics.cache.labels(model, "hit").inc(hits)
        self._metrics.cache.labels(model, "miss").inc(len(keys) - hits)
        self._counters.add(STATS, {f"{model}:hits": hits, f"{model}:misses": len(keys) - hits})
        return CacheOutcome([values[k] for k in keys], hits, True)

    async def _compute(
        self, mine: list[str], keys: list[str], compute: Compute, model: str
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Any]] = {}
        for key in mine:
            future: asyncio.Future[Any] = loop.create_future()
            # Retrieve a failure even when nobody waits (no "never retrieved" warnings).
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            futures[key] = self._inflight[key] = future
        try:
            first_index: dict[str, int] = {}
            for i, key in enumerate(keys):
                first_index.setdefault(key, i)
            computed = await compute([first_index[k] for k in mine])
            out = dict(zip(mine, computed, strict=True))
            encoded = {
                k: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY) for k, v in out.items()
            }
            await self.store.put_many(encoded, self.ttl_for(model))
            for key, value in out.items():
                futures[key].set_result(value)
            return out
        except asyncio.CancelledError:
            for future in futures.values():
                if not future.done():
                    future.set_exception(_Abandoned())
            raise
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            for key, future in futures.items():
                if self._inflight.get(key) is future:
                    del self._inflight[key]

    async def summary(self, models: Sequence[str]) -> dict:
        stats = await self._counters.read(STATS)
        out = {}
        for model in models:
            hits, misses = stats.get(f"{model}:hits", 0), stats.get(f"{model}:misses", 0)
            total = hits + misses
            out[model] = {
                "hits": hits,
                "misses": misses,
                "hit_rate": round(hits / total, 4) if total else None,
                "entries": await self.store.count(model),
                "ttl_s": self.ttl_for(model),
            }
        return {
            "enabled": self.settings.enabled,
            "backend": self.store.name,
            "scope": self.settings.scope,
            "models": out,
        }
