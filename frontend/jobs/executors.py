"""Picks the executor that runs batch jobs (`jobs.executor`, design §4.3).

"auto" means Celery when a broker is configured, else the in-process executor. "local"
without a job runner to drive fails at start, loudly, rather than accepting jobs that
would silently never run. The Celery modules are imported only when Celery is chosen.
"""

from __future__ import annotations

from typing import Literal

from ..observability.metrics import Metrics
from ..settings import JobSettings, Settings
from .dispatch import Dispatcher, NullDispatcher
from .local import LocalExecutor, Runs

ExecutorKind = Literal["local", "celery", "off"]


def executor_kind(jobs: JobSettings) -> ExecutorKind:
    """`jobs.executor` with "auto" resolved."""
    if jobs.executor == "auto":
        return "celery" if jobs.broker_url is not None else "local"
    return jobs.executor


def open_executor(
    settings: Settings, runner: Runs | None = None, *, metrics: Metrics | None = None
) -> Dispatcher:
    """The dispatcher for `jobs.executor`; `runner` (frontend/jobs/runner.py's JobRunner)
    is what the in-process executor drives; `metrics` counts the Celery dispatcher's
    failed sends. Not started: the caller starts and closes it."""
    jobs = settings.jobs
    kind = executor_kind(jobs)
    if kind == "off":
        return NullDispatcher()
    if kind == "celery":
        # Here, not at the top: a frontend without a broker never imports Celery.
        from .celery_app import make_celery
        from .celery_dispatch import CeleryDispatcher

        return CeleryDispatcher(make_celery(settings), jobs, metrics)
    if runner is not None:
        return LocalExecutor(runner, jobs.local_slots, shutdown_grace_s=jobs.shutdown_grace_s)
    raise RuntimeError(
        f"the local job executor is not available without a job runner (jobs.executor="
        f"{jobs.executor!r}); set INFERGATE_JOBS__EXECUTOR=off to accept jobs "
        "without running them"
    )
