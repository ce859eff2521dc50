"""What a JobRunner runs with: the same in the frontend (in-process executor) and in a
Celery worker process, each of which builds one per process."""

from __future__ import annotations

import asyncio
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
    # Triton requests of this process's jobs at once (jobs.triton_requests_in_flight),
    # shared by every chunk the process runs: what keeps an instance free for online
    # traffic. Made by `for_settings` unless given.
    in_flight: asyncio.Semaphore
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
    ) -> JobContext:
        slots = asyncio.Semaphore(settings.jobs.triton_requests_in_flight)
        return cls(settings, database, storage, metrics, adapters, worker_id, slots, clock)
