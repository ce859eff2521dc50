"""The Celery app of batch jobs (design §4.4): its configuration, its two tasks, and the
pool process's loop and services.

A task is a hint (design §0): `infergate.jobs.plan(job_id)` plans a job and
`infergate.jobs.chunk(job_id, idx)` runs one chunk; both run the same JobRunner
coroutine as the in-process executor, on this pool process's own event loop, then send
the follow-up work it returns. SQL holds every result, so there is no result backend;
a lost, failed or doubled task costs a delay (the reconciler sends the work again) or a
no-op (the runner's claim), never a row.

Nothing connects at import or in `make_celery`, and nothing gRPC or asyncio is made in
the worker's parent: each pool child opens its services in `worker_process_init`, after
the fork, and closes them in `worker_process_shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from ..db.jobs import Work
from ..settings import Settings
from .dispatch import WorkItem
from .worker_services import WorkerServices, open_worker_services

log = logging.getLogger("infergate.jobs")

TASK_PLAN = "infergate.jobs.plan"
TASK_CHUNK = "infergate.jobs.chunk"
# Celery kills a task this long after jobs.chunk_timeout_s: a backstop only, the runner
# times its own attempt out first (and gives its lease back).
TIME_LIMIT_MARGIN_S = 60
# A pool child reports "up" only once worker_process_init returned: opening the
# database (migrated outside prod), the catalog and the routing table takes longer than
# Celery's 4 s default on a loaded machine, and a child late past it is killed.
PROCESS_UP_TIMEOUT_S = 60.0
# Publishing: one quick retry at most. A broker that is away is the reconciler's case
# (the work stays in SQL), not a reason to hold a worker or the frontend for long.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


class JobsCelery(Celery):
    """A Celery app that keeps the settings its pool processes build their services from."""

    infergate_settings: Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app's configuration from Settings (the design's list, §4.4); no secret is
    logged from here on: Celery masks the broker password in its banner."""
    jobs = settings.jobs
    return {
        "broker_url": None if jobs.broker_url is None else jobs.broker_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Redis: an unacked task is delivered again after this; above the longest chunk
            # (JobSettings checks it), so a running chunk is never sent to a second worker.
            "visibility_timeout": jobs.visibility_timeout_s,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        # SQL holds the results: no backend, no result stored, even of a failure.
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        # Acked when it ends, not when it starts: a worker that dies mid-chunk leaves the
        # message to be delivered again; a pool child that dies (SIGKILL, OOM) gives it
        # back at once (reject_on_worker_lost). One message per process at a time, so a
        # busy process does not hold tasks another could run.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": jobs.chunk_timeout_s + TIME_LIMIT_MARGIN_S,
        "worker_proc_alive_timeout": PROCESS_UP_TIMEOUT_S,
        "task_default_queue": jobs.queue,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # JSON only: a pickled message would run whatever code its sender chose.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Our logging (frontend/observability/logging.py) stays: Celery adds none of its own.
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def make_celery(settings: Settings) -> JobsCelery:
    """The app with its two tasks; no connection is opened. Not made the current app:
    a frontend that sends tasks keeps Celery's default app untouched (the worker sets
    its own as current when it starts)."""
    app = JobsCelery("infergate", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.infergate_settings = settings

    # shared=False: a shared task (Celery's default) joins every app made in this
    # process, and the first one's callable, bound to the first app, would serve them all.
    @app.task(name=TASK_PLAN, shared=False)
    def plan(job_id: str) -> None:
        run_task(app, lambda services: services.runner.plan(job_id))

    @app.task(name=TASK_CHUNK, shared=False)
    def chunk(job_id: str, idx: int) -> None:
        async def run(services: WorkerServices) -> list[Work]:
            await services.sync_routing()
            return await services.runner.run_chunk(job_id, idx)

        run_task(app, run)

    return app


def task_of(item: WorkItem) -> tuple[str, list[Any]]:
    """The task name and arguments that carry `item`."""
    if item.kind == "plan":
        return TASK_PLAN, [item.job_id]
    if item.kind == "chunk" and item.idx is not None:
        return TASK_CHUNK, [item.job_id, item.idx]
    raise ValueError(f"unknown work item {item.kind!r} for job {item.job_id}")


def send_work(app: Celery, work: Sequence[WorkItem]) -> None:
    """Publishes one task per item over one producer (blocking: call it from a thread in
    async code). Raises what the broker raises."""
    if not work:
        return
    queue = app.conf.task_default_queue
    with app.producer_or_acquire() as producer:
        for item in work:
            name, args = task_of(item)
            app.send_task(name, args=args, queue=queue, producer=producer, ignore_result=True)


# -- the pool process -------------------------------------------------------------------


@dataclass
class ProcessState:
    """This pool process's event loop and services (None while they could not open)."""

    loop: asyncio.AbstractEventLoop
    services: WorkerServices | None = None


_process: ProcessState | None = None
# What a pool process opens its services with (tests put a fake here).
open_services: Callable[[Settings], Awaitable[WorkerServices]] = open_worker_services


def process_state() -> ProcessState | None:
    return _process


def open_process(settings: Settings) -> ProcessState:
    """This process's loop, and its services opened on it. A failure (the database away)
    is logged and leaves `services` None: the next task tries again."""
    global _process
    if _process is None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        _process = ProcessState(loop)
    if _process.services is None:
        try:
            _process.services = _process.loop.run_until_complete(open_services(settings))
        except Exception:
            log.exception("job worker process: opening its services failed")
    return _process


def close_process() -> None:
    """Closes this process's services, then its loop (worker_process_shutdown)."""
    global _process
    state, _process = _process, None
    if state is None:
        return
    loop = state.loop
    try:
        if state.services is not None:
            loop.run_until_complete(state.services.aclose())
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:
        log.exception("job worker process: closing its services failed")
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def run_task(
    app: JobsCelery, work: Callable[[WorkerServices], Awaitable[Sequence[WorkItem]]]
) -> None:
    """One task: `work` on this process's loop, then its follow-ups sent. Nothing is
    raised for a failure (the message is acked either way): the work is in SQL, and the
    reconciler sends it again once it is stale."""
    state = open_process(app.infergate_settings)  # opens what failed to open before
    if state.services is None:
        log.warning("job task skipped: this worker process has no services")
        return
    services = state.services

    async def call() -> Sequence[WorkItem]:
        return await work(services)

    try:
        follow = list(state.loop.run_until_complete(call()))
    except Exception:
        log.exception("job task failed in the runner")
        return
    try:
        send_work(app, follow)
    except Exception as exc:
        log.warning(
            "job follow-up work not sent; the reconciler sends it again",
            extra={"items": len(follow), "error": type(exc).__name__},
        )


def _settings_of_current_app() -> Settings | None:
    from celery import current_app

    app = current_app._get_current_object()
    return app.infergate_settings if isinstance(app, JobsCelery) else None


def _on_process_init(**_: Any) -> None:
    settings = _settings_of_current_app()
    if settings is not None:  # another Celery app in this process: not ours to serve
        open_process(settings)


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    close_process()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid if pid is not None else os.getpid())


worker_process_init.connect(_on_process_init, weak=False, dispatch_uid="infergate.jobs.init")
worker_process_shutdown.connect(
    _on_process_shutdown, weak=False, dispatch_uid="infergate.jobs.shutdown"
)

_default_app: JobsCelery | None = None


def __getattr__(name: str) -> Any:
    """`app` (also `celery`): the app of this process's Settings, for `celery -A
    frontend.jobs.celery_app worker`; made on first use, so importing this module reads
    no settings."""
    global _default_app
    if name in ("app", "celery"):
        if _default_app is None:
            _default_app = make_celery(Settings())
        return _default_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
