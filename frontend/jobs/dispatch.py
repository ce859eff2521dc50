"""How work reaches an executor: the Dispatcher protocol, and the one that runs nothing.

SQL is the system of record (design §0): a dispatched item is a hint that some work is
ready, never the only copy of it. So `send` never raises (a broker that is down leaves the
rows undispatched, and the reconciler sends them again later), and a lost or duplicated
message costs a delay or a no-op, never a row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger("infergate.jobs")


class WorkItem(Protocol):
    """One unit of dispatched work: plan job `job_id` (kind "plan", idx None) or run its
    chunk `idx` (kind "chunk"). frontend/db/jobs.py's `Work` is the concrete type; it
    lives below this layer, so only its shape is named here. Read-only attributes, so
    that a frozen dataclass with `Literal` kinds fits."""

    @property
    def kind(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def idx(self) -> int | None: ...


class Dispatcher(Protocol):
    """Hands work to whatever runs it: the in-process executor, Celery, or nobody."""

    async def send(self, work: Sequence[WorkItem]) -> None:
        """Queue `work`. Never raises: a failure is logged and counted, and the
        reconciler sends the work again from SQL."""
        ...

    async def ping(self) -> None:
        """For readiness: returns when the executor can take work, raises otherwise."""
        ...

    async def depth(self) -> int | None:
        """Items waiting in the broker's queue; None where that cannot be known."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NullDispatcher(Dispatcher):
    """`jobs.executor = "off"`: jobs are accepted and kept in SQL, and nothing runs them
    (a frontend that only takes submissions, or tests of the API alone). Switching an
    executor on later runs them: the reconciler finds the undispatched rows."""

    def __init__(self) -> None:
        self.discarded = 0  # items sent here, for tests and logs

    async def send(self, work: Sequence[WorkItem]) -> None:
        self.discarded += len(work)
        if work:
            log.debug("jobs.executor is off: %d work item(s) left in the database", len(work))

    async def ping(self) -> None:
        return None

    async def depth(self) -> int | None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
