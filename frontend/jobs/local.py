"""The in-process executor (design §4.3): the embedded default, no broker.

An asyncio queue fed by `send` (submissions, the runner's follow-ups, the reconciler) and
`slots` consumer tasks that hand each item to the job runner. The queue is only a hint,
as every dispatch is (design §0): an item lost with this process (a crash, a shutdown)
is found again in SQL by the reconciler, and one that is run twice is a no-op at the
runner's claim. So nothing here needs to be durable or exact, only prompt and bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from ..db.jobs import Work
from .dispatch import Dispatcher, WorkItem

log = logging.getLogger("infergate.jobs")

Key = tuple[str, str, int | None]  # (kind, job_id, idx): what de-duplicates the queue
# After the grace, cancelled runs get this long to end: the runner releases its lease on
# CancelledError (a shielded Database.run, 3 s deadline); a run that ignores the cancel
# must not hang the shutdown.
CANCEL_WAIT_S = 5.0


class Runs(Protocol):
    """What the executor drives: frontend/jobs/runner.py's JobRunner. Each call returns
    the follow-up work to dispatch (the job's next chunks after planning or a commit)."""

    async def plan(self, job_id: str) -> list[Work]: ...

    async def run_chunk(self, job_id: str, idx: int) -> list[Work]: ...


class LocalExecutor(Dispatcher):
    """Runs jobs' work in this process, at most `slots` items at once (jobs.local_slots).

    `close` stops taking work, gives what runs `shutdown_grace_s` to finish, then cancels
    it (the runner gives a cancelled chunk's lease back, so the next start takes it at
    once). What is still queued is dropped: it is in SQL."""

    def __init__(
        self,
        runner: Runs,
        slots: int,
        *,
        shutdown_grace_s: float = 5.0,
        cancel_wait_s: float = CANCEL_WAIT_S,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._runner = runner
        self._slots = slots
        self._grace_s = shutdown_grace_s
        self._cancel_wait_s = cancel_wait_s
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()  # keys in the queue now (not those running)
        self._consumers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()  # consumers inside a run
        self._closing = False
        self._settled = asyncio.Event()  # set while nothing is queued or running
        self._settled.set()
        # For tests and logs: runs finished (with or without an error) and runner errors.
        self.runs = 0
        self.errors = 0

    async def send(self, work: Sequence[WorkItem]) -> None:
        if self._closing:
            if work:
                log.debug("job executor closing: %d work item(s) left to SQL", len(work))
            return
        for item in work:
            key: Key = (item.kind, item.job_id, item.idx)
            if key in self._queued:  # the same hint twice: one run is enough
                continue
            self._queued.add(key)
            self._queue.put_nowait(key)
            self._settled.clear()

    async def ping(self) -> None:
        return None

    async def depth(self) -> int | None:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._consumers or self._closing:
            return
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"jobs.local.{n}") for n in range(self._slots)
        ]

    async def close(self) -> None:
        self._closing = True
        consumers, self._consumers = self._consumers, []
        if not consumers:
            return
        # Idle consumers wait on the queue: they stop now. Busy ones end after their run.
        for task in consumers:
            if task not in self._busy:
                task.cancel()
        _, running = await asyncio.wait(consumers, timeout=self._grace_s)
        if running:
            log.info("job executor: cancelling %d running item(s) at shutdown", len(running))
            for task in running:
                task.cancel()
            _, stuck = await asyncio.wait(running, timeout=self._cancel_wait_s)
            if stuck:
                log.error("job executor: %d run(s) ignored cancellation at shutdown", len(stuck))
        self._queued.clear()

    async def _consume(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._closing:
            key = await self._queue.get()
            self._queued.discard(key)
            if self._closing:
                break
            # No await between the get and this add: close() sees this consumer as busy
            # from the moment it holds an item.
            self._busy.add(me)
            try:
                await self.send(await self._run(key))
            finally:
                self._busy.discard(me)
                self.runs += 1
                if not self._busy and self._queue.empty():
                    self._settled.set()

    async def _run(self, key: Key) -> list[Work]:
        """One item through the runner; an error is logged and counted, never raised: a
        consumer that died on one bad item would stop every job behind it."""
        kind, job_id, idx = key
        try:
            # list(): a runner that returned something else is an error counted here, not
            # a consumer killed by send().
            if kind == "plan":
                return list(await self._runner.plan(job_id))
            if kind == "chunk" and idx is not None:
                return list(await self._runner.run_chunk(job_id, idx))
            raise ValueError(f"unknown work item {key!r}")
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception(
                "job work failed in the runner", extra={"kind": kind, "job_id": job_id, "idx": idx}
            )
            return []

    async def join(self) -> None:
        """Returns once nothing is queued or running (tests, benchmarks). Only while
        started: without consumers a queued item never runs."""
        await self._settled.wait()
