"""The reconciler (design §4.2): work whose dispatch was lost is found again in SQL.

Every frontend process runs one. A pass finishes the jobs that stalled (a cancelling job
nobody runs any more, a running job whose last commit's finish was lost), sends again
what was dispatched long ago and never started (or whose worker's lease ran out), and
refreshes the SQL-derived gauges. Each find marks what it returns as dispatched in the
same small transaction, so two reconcilers in one pass do not both send an item (and a
duplicate would be a no-op at the runner's claim). In the same loop, every `jobs.sweep_s`,
the retention sweep when a storage is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import jobs
from ..db.database import Database
from ..errors import DatabaseUnavailable
from ..job_settings import JobSettings
from ..observability.metrics import Metrics
from ..storage.base import Storage
from . import retention
from .dispatch import Dispatcher

log = logging.getLogger("infergate.jobs")

# Items per call: each call is one transaction, well inside Database.run's deadline (3 s)
# and short enough not to hold SQLite's one writer from the runners for long.
STALE_BATCH = 100  # of each kind (plans, queued chunks, ended leases)
FINISH_BATCH = 20  # each finish is a transition: a few statements
# Calls per pass: a larger backlog (thousands of chunks after a restart) goes on at the
# next pass rather than making one pass run long.
MAX_ROUNDS = 50


@dataclasses.dataclass(frozen=True, slots=True)
class PassCounts:
    sent: int = 0  # work items handed to the dispatcher
    finished: int = 0  # jobs moved to cancelled or succeeded


class Reconciler:
    def __init__(
        self,
        database: Database,
        dispatcher: Dispatcher,
        settings: JobSettings,
        metrics: Metrics,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`storage`: run the retention sweep in this loop too (every `jobs.sweep_s`).
        `clock`: wall-clock time, as every host's leases use it."""
        self._db = database
        self._dispatcher = dispatcher
        self._settings = settings
        self._metrics = metrics
        self._storage = storage
        self._clock = clock
        self._failing: set[str] = set()  # the steps whose last try failed (for the logs)
        self._stopping = False  # run() was cancelled: a pass in flight ends at its next call
        self.failures = 0  # failed passes and sweeps, for tests and logs

    async def start_pass(self, now: float | None = None) -> PassCounts:
        """The local executor's start: every queued item again, however recently it was
        dispatched (the previous process's in-memory queue died with it). Chunks that
        process was running come back when their lease ends."""
        return await self.pass_once(now, redispatch_s=0.0)

    async def pass_once(
        self, now: float | None = None, *, redispatch_s: float | None = None
    ) -> PassCounts:
        now = self._clock() if now is None else now
        redispatch = self._settings.redispatch_s if redispatch_s is None else redispatch_s
        retention_s = self._settings.retention_s
        # Finishes first: a job finished now skips its chunks, so none of them is sent.
        finished = 0
        for _ in range(MAX_ROUNDS):
            if self._stopping:
                break
            done = await self._db.run(
                "jobs.finish_stalled",
                lambda s: jobs.finish_stalled(s, now, FINISH_BATCH, retention_s=retention_s),
            )
            finished += len(done)
            if len(done) < FINISH_BATCH:
                break
        # What a call returns is marked dispatched at `now`, so the next call finds the
        # rest and the loop ends when nothing stale is left.
        sent = 0
        for _ in range(MAX_ROUNDS):
            if self._stopping:
                break
            work = await self._db.run(
                "jobs.stale_work", lambda s: jobs.stale_work(s, now, redispatch, STALE_BATCH)
            )
            if not work:
                break
            await self._dispatcher.send(work)
            sent += len(work)
        if not self._stopping:
            await self.refresh_gauges()
        if sent or finished:
            log.info("job reconciler pass", extra={"sent": sent, "finished": finished})
        return PassCounts(sent, finished)

    async def refresh_gauges(self) -> None:
        """infergate_jobs{state}, infergate_job_queue_depth{where} and the rows/s of all
        running jobs, from SQL (and the executor's own queue where it knows its length)."""
        counts, queued, rate = await self._db.run("jobs.gauges", _gauges)
        for state, n in counts.items():
            self._metrics.jobs.labels(state).set(n)
        self._metrics.job_queue_depth.labels("sql").set(queued)
        self._metrics.job_rows_per_second.set(rate)
        try:
            depth = await self._dispatcher.depth()
        except Exception as exc:  # a broker that is down: its gauge keeps its last value
            log.debug("job queue depth unknown", extra={"error": type(exc).__name__})
            return
        if depth is not None:
            self._metrics.job_queue_depth.labels("broker").set(depth)

    async def sweep_once(self, now: float | None = None) -> retention.SweepCounts:
        if self._storage is None:
            return retention.SweepCounts()
        now = self._clock() if now is None else now
        return await retention.sweep(self._db, self._storage, now, self._settings)

    async def run(self) -> None:
        """Passes every `jobs.reconcile_s` (and sweeps every `jobs.sweep_s`) until
        cancelled. A failing pass (the database down, anything else) is logged and
        counted, and the next one tries again."""
        next_sweep = self._clock()
        while True:
            await asyncio.sleep(self._settings.reconcile_s)
            await self._uncut("pass", self.pass_once)
            if self._storage is not None and self._clock() >= next_sweep:
                next_sweep = self._clock() + self._settings.sweep_s
                await self._uncut("sweep", self.sweep_once)

    async def _uncut(self, step: str, work: Callable[[], Awaitable[Any]]) -> None:
        """`step`, which a cancel does not cut in the middle of a database call: a
        transaction cut by a cancel leaves the driver closing its connection in the
        background, after the shutdown may have closed the database (seen: the event
        loop never ends). On cancel a pass stops before its next call (what it marked
        dispatched is sent first) and a sweep ends its few jobs, then the cancel goes on."""
        task = asyncio.ensure_future(self._guarded(step, work))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self._stopping = True
            await task
            raise

    async def _guarded(self, step: str, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            if step not in self._failing:  # once per outage, not every few seconds
                self._failing.add(step)
                # DatabaseUnavailable is expected in an outage; anything else is a bug.
                log.warning(
                    "job reconciler %s failed; trying again later",
                    step,
                    exc_info=not isinstance(exc, DatabaseUnavailable),
                    extra={"error": type(exc).__name__},
                )
            return
        if step in self._failing:
            self._failing.discard(step)
            log.info("job reconciler %s works again", step)


async def _gauges(session: AsyncSession) -> tuple[dict[str, int], int, float]:
    counts = await jobs.state_counts(session)
    queued = await jobs.queued_chunks(session)
    rate = await session.execute(
        select(func.coalesce(func.sum(jobs.JOBS.c.rate_rows_per_s), 0.0)).where(
            jobs.JOBS.c.state == "running"
        )
    )
    return counts, queued, float(rate.scalar_one())
