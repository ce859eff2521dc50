"""What a JobRunner runs with: the same in the frontend (in-process executor) and in a
Celery worker process, each of which builds one per process."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..db.database import Database
from ..observability.metrics import Metrics
from ..settings import Settings
from ..storage import Storage
from .adapters import TaskAdapter
from .pacing import Pacer


def worker_id() -> str:
    """This process as a lease owner: "<host>:<pid>" (the host cut to fit the column)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}"


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    database: Database
    storage: Storage
    metrics: Metrics
    adapters: Mapping[str, TaskAdapter]  # by task (adapters.adapters_for)
    worker_id: str  # "<host>:<pid>"; each attempt's lease owner adds 8 hex
    # Triton requests of this process's jobs: at most jobs.triton_requests_in_flight at
    # once, yielding to online traffic (pacing.py); shared by every chunk the process
    # runs. Made by `for_settings` unless given.
    in_flight: Pacer
    # Wall clock of leases, deferrals and commits (time.time: leases are compared
    # across hosts); tests pass a fake.
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        database: Database,
        storage: Storage,
        metrics: Metrics,
        adapters: Mapping[str, TaskAdapter],
        worker_id: str,
        clock: Callable[[], float] = time.time,
        online: Callable[[], bool] | None = None,
    ) -> JobContext:
        """`online`: whether online requests are being served beside (the frontend's
        in-process executor knows; a Celery worker does not, and goes by its timings)."""
        jobs = settings.jobs
        slots = Pacer(
            jobs.triton_requests_in_flight,
            yield_factor=jobs.yield_factor,
            contention_ratio=jobs.contention_ratio,
            online=online,
        )
        return cls(settings, database, storage, metrics, adapters, worker_id, slots, clock)
