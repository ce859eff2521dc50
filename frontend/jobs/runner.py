"""Planning a job and running one chunk of it (design §4.1): the same coroutines under the
in-process executor and in a Celery worker. Each returns the follow-up work to dispatch.

Why no row is lost or doubled: a chunk's rows reach the results only through the
`output_token` that its one winning commit (`complete_chunk`, WHERE the chunk is still
live) records. An attempt writes files under its own token first, so a kill before the
commit leaves files nobody references (the chunk re-runs when its lease ends), and a kill
after it leaves the chunk done (a redelivery stops at the claim). An attempt that loses
the commit deletes its own files. Row numbers come from planning, never from execution.

SQL transactions stay a few statements each (Database.run's deadline), and no file I/O
runs inside one; parsing, serializing and file writes run in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ..db import jobs, notifications
from ..db.jobs import ChunkClaim, ChunkOutcome, JobFileRow, JobRow, Work
from ..db.usage import add_counts
from ..errors import InfergateError
from . import chunk_io, failures
from .adapters import TaskAdapter
from .context import JobContext
from .generation_adapter import tokens_of
from .outputs import carried_columns, merge
from .plan import ChunkPlan
from .rows import Row

log = logging.getLogger("infergate.jobs")


class JobRunner:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.jobs

    # -- planning -------------------------------------------------------------------

    async def plan(self, job_id: str) -> list[Work]:
        """Cuts the job's files into chunks, then (once: a duplicate finds it planned)
        makes it running and queues its first window of chunks. The database away: it
        returns nothing, and the reconciler sends the planning again."""
        try:
            return await self._plan(job_id)
        except InfergateError as exc:
            log.warning("planning job %s: %s", job_id, exc.message)
            return []

    async def _plan(self, job_id: str) -> list[Work]:
        ctx = self.ctx

        async def read(s: Any) -> tuple[JobRow | None, list[JobFileRow]]:
            return await jobs.job(s, job_id), await jobs.files(s, job_id)

        job, files = await ctx.database.run("jobs.plan_read", read)
        if job is None or job.state != "queued" or job.planned:
            return []
        adapter = ctx.adapters.get(job.task)
        if adapter is None:
            await self._fail(job_id, failures.unsupported(job))
            return []
        try:
            file_rows, chunks = await self._plan_files(job, files, adapter)
            carried = carried_columns(job, files)
            await anyio.to_thread.run_sync(
                chunk_io.write_header, ctx.storage, job_id, carried, adapter.csv_columns
            )
        except (ValueError, FileNotFoundError) as exc:  # a file unlike its checks, or gone
            await self._fail(job_id, {"code": "invalid_file", "message": str(exc)})
            return []
        except OSError:  # storage away for now: the reconciler sends the planning again
            log.warning("planning job %s: storage error", job_id, exc_info=True)
            return []
        rows_total = sum(rows for _, rows in file_rows)
        now = ctx.clock()

        async def finish(s: Any) -> list[int]:
            if not await jobs.finish_planning(s, job_id, rows_total, chunks, file_rows, now):
                return []
            await jobs.settle_rows(s, job.account, job.reserved_day, rows_total - job.rows_reserved)
            if chunks == 0:
                await self._transition(s, job_id, "succeeded", now)
                return []
            return await jobs.next_to_dispatch(
                s, job_id, self.settings.chunks_in_flight_per_job, now
            )

        return [Work("chunk", job_id, i) for i in await ctx.database.run("jobs.plan", finish)]

    async def _plan_files(
        self, job: JobRow, files: Sequence[JobFileRow], adapter: TaskAdapter
    ) -> tuple[list[tuple[int, int]], int]:
        chunk_rows = min(self.settings.chunk_rows, adapter.max_rows)
        file_rows: list[tuple[int, int]] = []
        first_row, chunks = 1, 0
        for file in files:
            plans, rows = await anyio.to_thread.run_sync(
                chunk_io.plan_job_file, self.ctx.storage, job, file, first_row, chunks, chunk_rows
            )
            for at in range(0, len(plans), jobs.CHUNK_BATCH):  # each batch its own transaction
                await self._add_chunks(job.id, plans[at : at + jobs.CHUNK_BATCH])
            file_rows.append((first_row, rows))
            first_row, chunks = first_row + rows, chunks + len(plans)
        return file_rows, chunks

    async def _add_chunks(self, job_id: str, plans: list[ChunkPlan]) -> None:
        async def add(s: Any) -> None:
            await jobs.add_chunks(s, job_id, plans)

        await self.ctx.database.run("jobs.add_chunks", add)

    # -- one chunk --------------------------------------------------------------------

    async def run_chunk(self, job_id: str, idx: int) -> list[Work]:
        """Claims the chunk, runs it and commits it once; nothing when it is done, held
        by another attempt, deferred, or its job is not running."""
        ctx = self.ctx
        owner = f"{ctx.worker_id}:{secrets.token_hex(4)}"

        async def take(s: Any) -> tuple[ChunkClaim, JobRow, list[JobFileRow]] | None:
            return await self._claim(s, job_id, idx, owner)

        try:
            claimed = await ctx.database.run("jobs.claim_chunk", take)
        except InfergateError as exc:  # the database away: the reconciler sends it again
            log.warning("claiming chunk %s/%d: %s", job_id, idx, exc.message)
            return []
        if claimed is None:
            return []
        claim, job, files = claimed
        if claim.attempts > self.settings.max_chunk_attempts:  # its attempts died unfinished
            why = f"chunk {idx} did not finish in {claim.attempts - 1} attempts"
            await self._fail(job_id, {"code": "chunk_failed", "message": why})
            ctx.metrics.job_chunks.labels("failed").inc()
            return []
        adapter = ctx.adapters.get(job.task)
        if adapter is None:
            await self._fail(job_id, failures.unsupported(job))
            return []
        started = time.perf_counter()
        renewer = asyncio.ensure_future(self._renew(claim))
        try:
            try:
                outcome = await self._attempt(job, files, claim, adapter)
            finally:
                renewer.cancel()
            return await self._commit(job, claim, outcome, started)
        except asyncio.CancelledError:  # shutdown: give the chunk back for the next start
            await asyncio.shield(self._release(claim, None, None))
            raise
        except Exception as exc:
            # A failed commit leaves the files: whether it committed is unknown (they may
            # be referenced), and a release only matches a chunk still this attempt's.
            return await self._failed(job, claim, exc)

    async def _claim(
        self, s: Any, job_id: str, idx: int, owner: str
    ) -> tuple[ChunkClaim, JobRow, list[JobFileRow]] | None:
        now = self.ctx.clock()
        claim = await jobs.claim_chunk(s, job_id, idx, owner, now, self.settings.lease_s)
        job = await jobs.job(s, job_id)
        if claim is not None and job is not None:
            return claim, job, await jobs.files(s, job_id)
        # Not claimable: done, held, deferred, or its job is not running. A cancelling
        # job starts nothing new, and ends once none of its chunks runs.
        if job is not None and job.state == "cancelling":
            if await jobs.skip_chunk(s, job_id, idx):
                self.ctx.metrics.job_chunks.labels("skipped").inc()
            if await jobs.live_chunks(s, job_id, now) == 0:
                await self._transition(s, job_id, "cancelled", now)
        return None

    async def _renew(self, claim: ChunkClaim) -> None:
        """Keeps the lease while the attempt runs. A lost lease does not stop the attempt:
        the commit decides which attempt's files count."""
        lease_s = self.settings.lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            until = self.ctx.clock() + lease_s

            async def renew(s: Any, until: float = until) -> bool:
                owner = claim.lease_owner
                return await jobs.renew_lease(s, claim.job_id, claim.idx, owner, until)

            try:
                kept = await self.ctx.database.run("jobs.renew_lease", renew)
            except Exception:  # the database away: try again next period
                log.warning("renewing chunk %s/%d's lease failed", claim.job_id, claim.idx)
                continue
            if not kept:
                log.info("chunk %s/%d's lease was lost", claim.job_id, claim.idx)
                return

    async def _attempt(
        self, job: JobRow, files: list[JobFileRow], claim: ChunkClaim, adapter: TaskAdapter
    ) -> ChunkOutcome:
        ctx, file = self.ctx, files[claim.file_idx]
        items = await anyio.to_thread.run_sync(
            chunk_io.read_chunk, ctx.storage, ctx.settings.limits, job, file, claim
        )
        rows = [item for item in items if isinstance(item, Row)]
        predictions: list[Any] = []
        if rows:
            async with asyncio.timeout(self.settings.chunk_timeout_s):
                request_id = f"{job.id}-{claim.idx}"
                predictions = await adapter.predict(job, rows, request_id, ctx.in_flight)
        outcomes = merge(items, predictions)
        token, carried = secrets.token_hex(4), carried_columns(job, files)
        written = await anyio.to_thread.run_sync(
            chunk_io.write_chunk, ctx.storage, claim, token, outcomes, carried, adapter.csv_values
        )
        prompt, completion = tokens_of(predictions)
        return dataclasses.replace(written, prompt_tokens=prompt, completion_tokens=completion)

    async def _commit(
        self, job: JobRow, claim: ChunkClaim, outcome: ChunkOutcome, started: float
    ) -> list[Work]:
        ctx = self.ctx
        now = ctx.clock()

        async def commit(s: Any) -> tuple[bool, list[int]]:
            result = await jobs.complete_chunk(s, job.id, claim.idx, outcome, now)
            if not result.won:
                return False, []
            if outcome.rows_ok:  # in the commit's transaction: a chunk is counted once
                minute = int(now) // 60 * 60
                key = (job.subject, job.account, job.model, job.version, minute)
                tokens = (outcome.prompt_tokens, outcome.completion_tokens)
                await add_counts(s, {key: (0, outcome.rows_ok, *tokens, 0, 0)})
            if result.last:
                to = "cancelled" if result.state == "cancelling" else "succeeded"
                await self._transition(s, job.id, to, now)
            elif result.state == "cancelling":
                if await jobs.live_chunks(s, job.id, now) == 0:
                    await self._transition(s, job.id, "cancelled", now)
            elif result.state == "running":
                interval = ctx.settings.notify.progress_interval_s
                if await notifications.progress_due(s, job.id, job.owner, now, interval):
                    await notifications.enqueue_job_event(s, job.id, "job.progress", now)
                window = self.settings.chunks_in_flight_per_job
                return True, await jobs.next_to_dispatch(s, job.id, window, now)
            return True, []

        won, follow = await ctx.database.run("jobs.complete_chunk", commit)
        if not won:  # another attempt committed this chunk first: ours count for nobody
            ctx.metrics.job_chunks.labels("lost_race").inc()
            token = outcome.output_token
            await anyio.to_thread.run_sync(
                chunk_io.delete_chunk, ctx.storage, job.id, claim.idx, token
            )
            return []
        ctx.metrics.job_chunks.labels("done").inc()
        ctx.metrics.job_rows.labels(job.model, "ok").inc(outcome.rows_ok)
        ctx.metrics.job_rows.labels(job.model, "failed").inc(outcome.rows_failed)
        ctx.metrics.job_chunk_time.labels(job.model).observe(time.perf_counter() - started)
        return [Work("chunk", job.id, i) for i in follow]

    # -- failures ---------------------------------------------------------------------

    async def _failed(self, job: JobRow, claim: ChunkClaim, exc: Exception) -> list[Work]:
        limit = self.settings.max_chunk_attempts
        verdict = failures.judge(exc, claim.idx, claim.attempts, limit, self.ctx.clock())
        self.ctx.metrics.job_chunks.labels(verdict.outcome).inc()
        if verdict.not_before is not None:
            log.info(
                "chunk %s/%d: %s; claimable again at %.0f",
                job.id,
                claim.idx,
                verdict.error,
                verdict.not_before,
            )
            await self._release(claim, verdict.not_before, verdict.waiting)
            return []
        if not isinstance(exc, InfergateError):
            log.error("chunk %s/%d failed", job.id, claim.idx, exc_info=exc)
        await self._fail(job.id, verdict.error)
        return []

    async def _release(
        self, claim: ChunkClaim, not_before: float | None, waiting: dict[str, Any] | None
    ) -> None:
        now = self.ctx.clock()

        async def release(s: Any) -> None:
            owner = claim.lease_owner
            if await jobs.release_chunk(s, claim.job_id, claim.idx, owner, not_before) and waiting:
                await jobs.set_waiting(s, claim.job_id, waiting, now)

        try:
            await self.ctx.database.run("jobs.release_chunk", release)
        except Exception:  # its lease runs out instead, and the reconciler sends it again
            log.warning("releasing chunk %s/%d failed", claim.job_id, claim.idx, exc_info=True)

    async def _fail(self, job_id: str, error: dict[str, str]) -> None:
        now = self.ctx.clock()
        try:

            async def fail(s: Any) -> bool:
                return await self._transition(s, job_id, "failed", now, error)

            await self.ctx.database.run("jobs.fail", fail)
        except Exception:  # the chunk's lease runs out and the next attempt fails it again
            log.warning("failing job %s failed", job_id, exc_info=True)

    async def _transition(
        self, s: Any, job_id: str, to: str, now: float, error: dict[str, str] | None = None
    ) -> bool:
        retention = float(self.settings.retention_s)
        return await jobs.transition(s, job_id, to, now, error=error, retention_s=retention)
