"""The app's services in one typed container, built in one place and closed in one place.

`open_services` builds every service in dependency order, registering each one's closing
as it opens it; starts the background loops only once everything is built; and on the way
out (or when building fails half-way) undoes it all in reverse: loops stopped and awaited,
the job executor closed (before the database: a chunk cancelled inside `Database.run`
and then a closed database hang aiosqlite's loop), this worker's last counts written,
then the database, Redis and Triton closed. Nothing connects at
import time. The one container hangs on `app.state.services` (`attach`, `services_of`):
routes never look there, they declare what they need (frontend/deps.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.applications import Starlette

from .access import Access
from .auth.secrets import derive
from .cache.service import ResultCache
from .cache.store import CacheStore, MemoryCacheStore, RedisCacheStore
from .catalog import Catalog
from .db.audit import AuditLog
from .db.database import Database
from .db.startup import open_database
from .errors import DatabaseUnavailable, StateUnavailable
from .jobs import executors
from .jobs.adapters import adapters_for
from .jobs.context import JobContext, worker_id
from .jobs.dispatch import Dispatcher
from .jobs.pacing import CONTENDED_HOLD_S
from .jobs.reconcile import Reconciler
from .jobs.runner import JobRunner
from .jobs.service import JobsService
from .notify.build import build_notify
from .notify.dispatcher import Notifier
from .notify.service import NotificationsService
from .notify.ssrf import Resolver
from .observability.metrics import Metrics
from .routing.assign import Assigner
from .routing.router import Router, load_file
from .routing.stats import RoutingStats
from .services.generation import GenerationService
from .services.health import ReadinessCache
from .services.inference import InferenceService
from .settings import Settings
from .state.connect import connect_redis
from .state.counters import BufferedCounters
from .state.guard import RedisGuard
from .state.memory import MemoryStore
from .state.redis_store import RedisStore
from .state.store import StateStore
from .storage import LocalStorage, Storage
from .triton.client import TritonClient
from .usage.ledger import UsageLedger

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("infergate")


@dataclass
class Services:
    """Everything a request may need, built once per process by `open_services`."""

    settings: Settings
    metrics: Metrics
    catalog: Catalog
    triton: TritonClient
    redis: Redis | None  # None: no Redis configured, state kept in process
    redis_guard: RedisGuard | None
    store: StateStore
    database: Database
    audit: AuditLog
    ledger: UsageLedger
    counters: BufferedCounters
    cache: ResultCache
    router: Router
    routing_stats: RoutingStats
    inference: InferenceService
    access: Access
    generation: GenerationService
    readiness: ReadinessCache
    # Batch jobs: their files, a second Triton client whose requests carry the batch
    # priority (own channel), the services over it (no shadow traffic), the executor
    # the work goes to, the loop that finds lost work again, and the API's service.
    storage: Storage
    batch_triton: TritonClient
    batch_inference: InferenceService
    dispatcher: Dispatcher
    reconciler: Reconciler
    jobs: JobsService
    # Notifications: webhooks and e-mail (the routes' service) and the outbox dispatcher
    # (run here unless notify.dispatcher is off).
    notifications: NotificationsService
    notifier: Notifier
    # True from the end of start-up to the start of shutdown (/health/startup).
    started: bool = False


@dataclass(frozen=True)
class ServiceOverrides:
    """Parts to use instead of building them from the settings (tests pass fakes here).
    What is given is owned like what is built: Triton and Redis are closed at shutdown."""

    catalog: Catalog | None = None
    triton: TritonClient | None = None
    # A redis.asyncio client (or a fake of one), used as one made from settings.redis.url.
    redis: Redis | None = None
    # Shared state (keys, users, limits, routing, counters); the default follows Redis.
    store: StateStore | None = None
    cache_store: CacheStore | None = None
    readiness: ReadinessCache | None = None
    # Batch jobs: the batch-priority Triton client (default: one of its own, or the given
    # `triton` when only that is given), the job files' storage (default:
    # jobs.storage_dir), and the executor (default: jobs.executor's, over this app's
    # runner). Closed like what is built.
    batch_triton: TritonClient | None = None
    storage: Storage | None = None
    dispatcher: Dispatcher | None = None
    # Notifications: the resolver of webhook hosts (default: notify.hosts, then DNS).
    resolver: Resolver | None = None


async def build_services(
    settings: Settings,
    metrics: Metrics,
    stack: AsyncExitStack,
    overrides: ServiceOverrides | None = None,
) -> Services:
    """Builds every service; each one that holds something open has its closing pushed
    on `stack` as soon as it exists, so a failure further on still closes it. Starts no
    task: the background loops wait for `start_background`."""
    given = overrides or ServiceOverrides()
    catalog = given.catalog
    if catalog is None:
        catalog = Catalog.load(settings.triton.model_repository)
    triton = given.triton if given.triton is not None else TritonClient(settings.triton)
    stack.push_async_callback(triton.close)
    redis = given.redis if given.redis is not None else connect_redis(settings)
    guard: RedisGuard | None = None
    store: StateStore
    cache_store: CacheStore
    if redis is not None:
        stack.push_async_callback(redis.aclose)
        guard = RedisGuard(metrics, settings.redis.deadline_s, settings.auth.redis_probe_s)
        guard.attach(redis.ping)
        stack.push_async_callback(guard.close)  # its prober, if Redis went down
        store = given.store if given.store is not None else RedisStore(redis, guard)
        cache_store = given.cache_store or RedisCacheStore(redis, guard)
    else:
        log.info("no Redis configured: state is kept in process (run a single worker)")
        store = given.store if given.store is not None else MemoryStore()
        cache_store = given.cache_store or MemoryCacheStore(settings.cache.max_memory_items)
    database = await open_database(settings, metrics)
    stack.push_async_callback(database.close)
    ledger = UsageLedger(database, settings.database.usage_flush_s, metrics)
    stack.push_async_callback(_last_usage, ledger)
    counters = BufferedCounters(store)
    stack.push_async_callback(_last_counts, counters)
    cache = ResultCache(settings.cache, cache_store, counters, metrics)
    router = Router(
        catalog,
        load_file(settings.routing.file),
        store,
        Assigner(derive(settings.secret, "routing")),
        settings.routing.poll_s,
        database,
    )
    with contextlib.suppress(StateUnavailable, DatabaseUnavailable):  # the watch catches up
        await router.sync()
    routing_stats = RoutingStats(store, counters)
    access = Access.build(settings, store, database, metrics)
    stack.push_async_callback(access.keys.write_last_used)
    inference = InferenceService(settings, catalog, triton, cache, router, routing_stats, metrics)
    batch_triton = _batch_triton(settings, given, stack)
    batch_inference = InferenceService(
        settings, catalog, batch_triton, cache, router, routing_stats, metrics, shadow=False
    )
    storage = given.storage
    if storage is None:
        root, fsync = settings.jobs.storage_dir, settings.jobs.fsync
        storage = await anyio.to_thread.run_sync(lambda: LocalStorage(root, fsync))
    # Generation jobs: the online service's quota, over the batch client.
    batch_generation = GenerationService(
        catalog, batch_triton, access.quota, settings.generation, metrics
    )
    adapters = adapters_for(batch_inference, settings, batch_generation)
    context = JobContext.for_settings(
        settings,
        database,
        storage,
        metrics,
        adapters,
        worker_id(),
        online=lambda: inference.called_within(CONTENDED_HOLD_S),
    )
    dispatcher = given.dispatcher or executors.open_executor(
        settings, JobRunner(context), metrics=metrics
    )
    # Closed before the database (pushed after it): see the module docstring.
    stack.push_async_callback(dispatcher.close)
    reconciler = Reconciler(database, dispatcher, settings.jobs, metrics, storage=storage)
    notify = build_notify(settings, database, metrics, worker_id(), resolver=given.resolver)
    stack.push_async_callback(notify.client.aclose)
    database.on_commit(notify.notifier.wake)
    jobs_service = JobsService(
        settings,
        database,
        storage,
        inference,
        dispatcher,
        metrics,
        tasks=adapters.keys(),
        notifications=notify.service,
    )
    return Services(
        settings=settings,
        metrics=metrics,
        catalog=catalog,
        triton=triton,
        redis=redis,
        redis_guard=guard,
        store=store,
        database=database,
        audit=AuditLog(database),
        ledger=ledger,
        counters=counters,
        cache=cache,
        router=router,
        routing_stats=routing_stats,
        inference=inference,
        access=access,
        generation=GenerationService(catalog, triton, access.quota, settings.generation, metrics),
        readiness=given.readiness or ReadinessCache(settings.triton.ready_cache_s),
        storage=storage,
        batch_triton=batch_triton,
        batch_inference=batch_inference,
        dispatcher=dispatcher,
        reconciler=reconciler,
        jobs=jobs_service,
        notifications=notify.service,
        notifier=notify.notifier,
    )


def _batch_triton(
    settings: Settings, given: ServiceOverrides, stack: AsyncExitStack
) -> TritonClient:
    if given.batch_triton is not None:
        client = given.batch_triton
    elif given.triton is not None:
        return given.triton  # a test's one fake: closed once, as the online client
    else:
        client = TritonClient(settings.triton, priority=settings.jobs.triton_priority)
    stack.push_async_callback(client.close)
    return client


async def start_background(services: Services, stack: AsyncExitStack) -> None:
    """The loops that keep this worker in step with the others: routing changes polled,
    shared counters written, lost job work found again (and expired jobs swept). Each is
    stopped (cancelled, and awaited) on `stack`'s exit, before anything it uses is
    closed. The job executor starts first, then one reconciler pass hands it every
    queued item (the previous process's queue died with it)."""
    await services.dispatcher.start()
    with contextlib.suppress(DatabaseUnavailable):  # the loop's next pass catches up
        await services.reconciler.start_pass()
    loops: tuple[Coroutine[Any, Any, None], ...] = (
        services.router.watch(),
        services.counters.run(),
        services.ledger.run(),
        _every(5.0, services.access.keys.write_last_used),
        services.reconciler.run(),
    )
    if services.settings.notify.dispatcher == "on":
        loops = (*loops, services.notifier.run())
    for loop in loops:
        stack.push_async_callback(_stop, asyncio.create_task(loop))


@asynccontextmanager
async def open_services(
    settings: Settings, metrics: Metrics, overrides: ServiceOverrides | None = None
) -> AsyncIterator[Services]:
    """Every service, built and running inside the block; all of it stopped and closed
    after it, in reverse order, also when start-up fails half-way."""
    async with AsyncExitStack() as stack:
        services = await build_services(settings, metrics, stack, overrides)
        await start_background(services, stack)
        yield services


def attach(app: Starlette, services: Services) -> None:
    app.state.services = services


def services_of(app: Starlette) -> Services | None:
    """The app's services; None before its start-up has built them."""
    services: Services | None = getattr(app.state, "services", None)
    return services


async def _last_counts(counters: BufferedCounters) -> None:
    with contextlib.suppress(StateUnavailable):
        await counters.flush()  # this worker's last counts


async def _every(interval_s: float, work: Callable[[], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await work()


async def _last_usage(ledger: UsageLedger) -> None:
    with contextlib.suppress(DatabaseUnavailable):
        await ledger.flush()  # this worker's last usage (SIGTERM)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    # Waited for without raising: a loop that already ended with an error must not stop
    # the rest of the shutdown; its error is logged instead.
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("background loop failed", exc_info=task.exception())
