"""What one Celery pool process runs jobs with (design §4.4): the subset of the frontend's
services the job runner needs, built without the app.

Built inside the pool child (`worker_process_init`), never in the parent: a gRPC channel
and an event loop do not survive fork (procs/process.py says the same of gRPC threads).
The container (frontend/container.py) is not used: it builds the whole app's services
(access, ledger, background loops); a worker needs the database, the storage, the
catalog and a batch Triton client behind the same services as the synchronous API, so
that a job's rows equal the predict API's answers by construction.

Routing and the result cache keep their state in process (MemoryStore): a job pins its
version at submission, and its calls bypass the result cache, so routing and cache state
shared through Redis would change nothing here; the routing table is still read from
SQL (`sync_routing`). The token quota of generation jobs is the one exception: it is the
frontend's own, in Redis when `redis.url` is set (else in process: one host only).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ..auth.secrets import derive
from ..cache.service import ResultCache
from ..cache.store import MemoryCacheStore
from ..catalog import Catalog
from ..db.migrate import NotMigrated
from ..db.startup import database_url, open_database
from ..errors import DatabaseUnavailable, StateUnavailable
from ..observability.metrics import Metrics
from ..ratelimit.quota import TokenQuota
from ..routing.assign import Assigner
from ..routing.router import Router, load_file
from ..routing.stats import RoutingStats
from ..services.generation import GenerationService
from ..services.inference import InferenceService
from ..settings import Settings
from ..state.connect import connect_redis
from ..state.counters import BufferedCounters
from ..state.guard import RedisGuard
from ..state.memory import MemoryStore
from ..state.redis_store import RedisStore
from ..state.store import StateStore
from ..storage.local import LocalStorage
from ..triton.client import TritonClient
from .adapters import adapters_for
from .context import JobContext, worker_id
from .runner import JobRunner

log = logging.getLogger("infergate.jobs")

NEEDS_DATABASE = (
    "the job worker needs INFERGATE_DATABASE__URL, the frontend's database (an in-memory "
    "database is private to one process)"
)


class WorkerSetupError(RuntimeError):
    """The worker cannot run jobs with these settings (said before anything opens)."""


@dataclass
class WorkerServices:
    """One pool process's job runner and what it holds open; `aclose` closes it all."""

    context: JobContext
    runner: JobRunner
    triton: TritonClient  # the batch client (jobs.triton_priority on every request)
    inference: InferenceService  # shadow=False
    router: Router
    stack: AsyncExitStack
    routing_poll_s: float
    clock: Callable[[], float] = field(default=time.monotonic)
    _synced_at: float = field(default=float("-inf"))

    async def sync_routing(self) -> None:
        """Before a task: the routing table re-read at most every `routing.poll_s` (the
        frontend's `watch` loop cannot run between tasks). An outage keeps the table as
        it is: the job's recorded version is what its calls ask for."""
        now = self.clock()
        if now - self._synced_at < self.routing_poll_s:
            return
        self._synced_at = now
        with contextlib.suppress(StateUnavailable, DatabaseUnavailable):
            await self.router.sync()

    async def aclose(self) -> None:
        await self.stack.aclose()


def check_worker_settings(settings: Settings) -> None:
    """Raises WorkerSetupError when a worker could not share the frontend's jobs."""
    if settings.jobs.broker_url is None:
        raise WorkerSetupError("the job worker needs INFERGATE_JOBS__BROKER_URL (its broker)")
    try:
        url = database_url(settings)
    except NotMigrated as exc:  # prod without a URL
        raise WorkerSetupError(NEEDS_DATABASE) from exc
    if ":memory:" in url:
        raise WorkerSetupError(NEEDS_DATABASE)


async def open_worker_services(
    settings: Settings, metrics: Metrics | None = None
) -> WorkerServices:
    """Everything `JobRunner` needs, opened in this process's running loop; on a failure
    half-way what was opened is closed again before the error goes on."""
    check_worker_settings(settings)
    metrics = metrics if metrics is not None else Metrics()
    stack = AsyncExitStack()
    try:
        return await _build(settings, metrics, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _build(settings: Settings, metrics: Metrics, stack: AsyncExitStack) -> WorkerServices:
    catalog = Catalog.load(settings.triton.model_repository)
    # The batch client: its own channel, every request at the jobs' Triton priority.
    triton = TritonClient(settings.triton, priority=settings.jobs.triton_priority)
    stack.push_async_callback(triton.close)
    database = await open_database(settings, metrics)
    stack.push_async_callback(database.close)
    store = MemoryStore()
    quota_store: StateStore = store
    redis = connect_redis(settings)
    if redis is not None:
        stack.push_async_callback(redis.aclose)
        guard = RedisGuard(metrics, settings.redis.deadline_s, settings.auth.redis_probe_s)
        guard.attach(redis.ping)
        stack.push_async_callback(guard.close)
        quota_store = RedisStore(redis, guard)
    fail_open = settings.auth.redis_failure_policy == "open"
    quota = TokenQuota(settings.auth.tiers, quota_store, fail_open, metrics)
    counters = BufferedCounters(store)
    cache = ResultCache(
        settings.cache, MemoryCacheStore(settings.cache.max_memory_items), counters, metrics
    )
    router = Router(
        catalog,
        load_file(settings.routing.file),
        store,
        Assigner(derive(settings.secret, "routing")),
        settings.routing.poll_s,
        database,
    )
    inference = InferenceService(
        settings,
        catalog,
        triton,
        cache,
        router,
        RoutingStats(store, counters),
        metrics,
        shadow=False,
    )
    storage = LocalStorage(settings.jobs.storage_dir, fsync=settings.jobs.fsync)
    context = JobContext.for_settings(
        settings,
        database,
        storage,
        metrics,
        adapters_for(
            inference,
            settings,
            GenerationService(catalog, triton, quota, settings.generation, metrics),
        ),
        worker_id(),
    )
    services = WorkerServices(
        context=context,
        runner=JobRunner(context),
        triton=triton,
        inference=inference,
        router=router,
        stack=stack,
        routing_poll_s=settings.routing.poll_s,
    )
    await services.sync_routing()
    log.info("job worker process ready", extra={"worker_id": context.worker_id})
    return services
