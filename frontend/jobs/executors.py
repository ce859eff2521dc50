"""Picks the executor that runs batch jobs (`jobs.executor`, design §4.3).

"auto" means Celery when a broker is configured, else the in-process executor. The
Celery executor comes with its own work package: until then choosing it fails at start,
loudly, rather than accepting jobs that would silently never run. So does "local"
without a job runner to drive.
"""

from __future__ import annotations

from typing import Literal

from ..settings import JobSettings, Settings
from .dispatch import Dispatcher, NullDispatcher
from .local import LocalExecutor, Runs

ExecutorKind = Literal["local", "celery", "off"]


def executor_kind(jobs: JobSettings) -> ExecutorKind:
    """`jobs.executor` with "auto" resolved."""
    if jobs.executor == "auto":
        return "celery" if jobs.broker_url is not None else "local"
    return jobs.executor


def open_executor(settings: Settings, runner: Runs | None = None) -> Dispatcher:
    """The dispatcher for `jobs.executor`; `runner` (frontend/jobs/runner.py's JobRunner)
    is what the in-process executor drives. Not started: the caller starts and closes it."""
    jobs = settings.jobs
    kind = executor_kind(jobs)
    if kind == "off":
        return NullDispatcher()
    if kind == "local" and runner is not None:
        return LocalExecutor(runner, jobs.local_slots, shutdown_grace_s=jobs.shutdown_grace_s)
    missing = "yet" if kind == "celery" else "without a job runner"
    raise RuntimeError(
        f"the {kind} job executor is not available {missing} (jobs.executor="
        f"{jobs.executor!r}); set INFERGATE_JOBS__EXECUTOR=off to accept jobs "
        "without running them"
    )
