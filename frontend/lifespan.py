"""Opens and closes what the app talks to; nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .access import Access
from .auth.secrets import derive
from .cache.service import ResultCache
from .cache.store import CacheStore, MemoryCacheStore, RedisCacheStore
from .errors import StateUnavailable
from .routing.assign import Assigner
from .routing.router import Router, load_file
from .routing.stats import RoutingStats
from .services.catalog import Catalog
from .services.generation import GenerationService
from .services.inference import InferenceService
from .state.counters import BufferedCounters
from .state.guard import RedisGuard
from .state.memory import MemoryStore
from .state.redis_store import RedisStore
from .state.store import StateStore
from .triton.client import TritonClient

log = logging.getLogger("infergate")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    app.state.catalog = Catalog.load(settings.triton.model_repository)
    app.state.triton = TritonClient(settings.triton)
    app.state.redis = None
    store: StateStore
    if settings.redis.url is not None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        app.state.redis = redis.from_url(
            settings.redis.url.get_secret_value(),
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.connect_timeout_s,
            # One quick retry at most: the guard's deadline bounds every call anyway.
            retry=Retry(NoBackoff(), 1),
            max_connections=settings.redis.max_connections,
        )
        guard = RedisGuard(
            app.state.metrics, settings.redis.deadline_s, settings.auth.redis_probe_s
        )
        guard.attach(app.state.redis.ping)
        app.state.redis_guard = guard
        store = RedisStore(app.state.redis, guard)
        cache_store: CacheStore = RedisCacheStore(app.state.redis, guard)
    else:
        log.info("no Redis configured: state is kept in process (run a single worker)")
        store = MemoryStore()
        cache_store = MemoryCacheStore(settings.cache.max_memory_items)
    counters = BufferedCounters(store)
    app.state.cache = ResultCache(settings.cache, cache_store, counters, app.state.metrics)
    app.state.router = Router(
        app.state.catalog,
        load_file(settings.routing.file),
        store,
        Assigner(derive(settings.secret, "routing")),
        settings.routing.poll_s,
    )
    with contextlib.suppress(StateUnavailable):
        await app.state.router.sync()
    app.state.routing_stats = RoutingStats(store, counters)
    app.state.inference = InferenceService(
        settings,
        app.state.catalog,
        app.state.triton,
        app.state.cache,
        app.state.router,
        app.state.routing_stats,
        app.state.metrics,
    )
    background = [
        asyncio.create_task(app.state.router.watch()),
        asyncio.create_task(counters.run()),
    ]
    app.state.access = Access.build(settings, store, app.state.metrics)
    app.state.generation = GenerationService(
        app.state.catalog,
        app.state.triton,
        app.state.access.quota,
        settings.generation,
        app.state.metrics,
    )
    secret_warning = settings.secret_warning()
    if secret_warning is not None:
        log.warning("SECURITY: %s", secret_warning)
    if not settings.auth.enabled:
        log.warning("authentication is OFF: every caller is an unthrottled admin")
    log.info("started", extra={"models": app.state.catalog.names(), "triton": settings.triton.url})
    app.state.started = True
    try:
        yield
    finally:
        app.state.started = False
        for task in background:
            task.cancel()
        with contextlib.suppress(StateUnavailable):
            await counters.flush()  # this worker's last counts
        if app.state.redis is not None:
            await app.state.redis_guard.close()
        await app.state.triton.close()
        if app.state.redis is not None:
            await app.state.redis.aclose()
