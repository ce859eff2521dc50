"""Picks the executor that runs batch jobs (`jobs.executor`, design §4.3).

"auto" means Celery when a broker is configured, else the in-process executor. Only
"off" exists so far: the local and Celery executors come with their own work packages,
and until then choosing one fails at start, loudly, rather than accepting jobs that
would silently never run.
"""

from __future__ import annotations

from typing import Literal

from ..settings import JobSettings, Settings
from .dispatch import Dispatcher, NullDispatcher

ExecutorKind = Literal["local", "celery", "off"]


def executor_kind(jobs: JobSettings) -> ExecutorKind:
    """`jobs.executor` with "auto" resolved."""
    if jobs.executor == "auto":
        return "celery" if jobs.broker_url is not None else "local"
    return jobs.executor


def open_executor(settings: Settings) -> Dispatcher:
    kind = executor_kind(settings.jobs)
    if kind == "off":
        return NullDispatcher()
    raise RuntimeError(
        f"the {kind} job executor is not available yet (jobs.executor="
        f"{settings.jobs.executor!r}); set INFERGATE_JOBS__EXECUTOR=off to accept jobs "
        "without running them"
    )
