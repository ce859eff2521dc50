"""The in-process executor (frontend/jobs/local.py, design §4.3) over a fake runner: work
and its follow-ups run, `slots` bounds how many at once, a runner's error stops nothing,
close gives running work its grace then cancels it, and queued duplicates run once.
Synchronisation by events and counters only; the waits are deadlines, never pacing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from frontend.db.jobs import Work
from frontend.jobs.local import LocalExecutor

T = TypeVar("T")
DEADLINE_S = 10.0  # a generous bound on each wait: these tests assert order, not time


def plan(job: str) -> Work:
    return Work("plan", job)


def chunk(job: str, idx: int) -> Work:
    return Work("chunk", job, idx)


class Runner:
    """Records each call; returns `follow[work]`; raises for the work in `fail`; with a
    `gate`, each run waits for it (and counts how many wait at once)."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls: list[Work] = []
        self.follow: dict[Work, list[Work]] = {}
        self.fail: set[Work] = set()
        self.gate = gate
        self.active = self.peak = 0
        self.cancelled: list[Work] = []
        self.changed = asyncio.Event()  # set at every start of a run

    async def plan(self, job_id: str) -> list[Work]:
        return await self._run(plan(job_id))

    async def run_chunk(self, job_id: str, idx: int) -> list[Work]:
        return await self._run(chunk(job_id, idx))

    async def _run(self, work: Work) -> list[Work]:
        self.calls.append(work)
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if work in self.fail:
                raise RuntimeError(f"runner failed on {work}")
            return self.follow.get(work, [])
        except asyncio.CancelledError:
            self.cancelled.append(work)  # where the real runner releases its lease
            raise
        finally:
            self.active -= 1


async def until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    """Waits, under the deadline, for `condition`, re-checked each time `changed` is set."""

    async def wait() -> None:
        while not condition():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(wait(), DEADLINE_S)


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), 3 * DEADLINE_S))


def test_work_and_its_follow_ups_run_in_order():
    async def body():
        runner = Runner()
        runner.follow = {
            plan("a"): [chunk("a", 0), chunk("a", 1)],
            chunk("a", 0): [chunk("a", 2)],  # a commit dispatches the next chunk
        }
        executor = LocalExecutor(runner, 1)
        await executor.start()
        await executor.send([plan("a")])
        await asyncio.wait_for(executor.join(), DEADLINE_S)
        depth = await executor.depth()
        await executor.ping()
        await executor.close()
        return runner, executor, depth

    runner, executor, depth = run(body)
    assert runner.calls == [plan("a"), chunk("a", 0), chunk("a", 1), chunk("a", 2)]
    assert (executor.runs, executor.errors, depth) == (4, 0, 0)


def test_slots_bound_how_many_run_at_once():
    async def body():
        gate = asyncio.Event()
        runner = Runner(gate)
        executor = LocalExecutor(runner, 2)
        await executor.start()
        await executor.send([chunk("a", i) for i in range(5)])
        await until(lambda: runner.active == 2, runner.changed)
        for _ in range(20):  # let the loop run: a third consumer would start now
            await asyncio.sleep(0)
        held = (runner.active, runner.peak, await executor.depth())
        gate.set()
        await asyncio.wait_for(executor.join(), DEADLINE_S)
        await executor.close()
        return runner, held

    runner, held = run(body)
    assert held == (2, 2, 3)  # two running, three waiting
    assert runner.peak == 2 and sorted(w.idx or 0 for w in runner.calls) == [0, 1, 2, 3, 4]


def test_a_failing_runner_stops_nothing():
    async def body():
        runner = Runner()
        runner.fail = {chunk("a", 0), plan("b")}
        executor = LocalExecutor(runner, 1)
        await executor.start()
        await executor.send([chunk("a", 0), plan("b"), chunk("a", 1), Work("chunk", "a")])
        await asyncio.wait_for(executor.join(), DEADLINE_S)
        await executor.send([chunk("a", 2)])  # the one consumer still takes work
        await asyncio.wait_for(executor.join(), DEADLINE_S)
        await executor.close()
        return runner, executor

    runner, executor = run(body)
    assert runner.calls == [chunk("a", 0), plan("b"), chunk("a", 1), chunk("a", 2)]
    # The two runner errors, and a chunk without an index (never reaches the runner).
    assert (executor.runs, executor.errors) == (5, 3)


def test_queued_duplicates_run_once_and_running_work_can_be_queued_again():
    async def body():
        gate = asyncio.Event()
        runner = Runner(gate)
        executor = LocalExecutor(runner, 1)
        await executor.send([chunk("a", 0), chunk("a", 0), plan("a"), chunk("a", 1)])
        await executor.send([plan("a"), chunk("a", 1), chunk("b", 1)])
        before = await executor.depth()
        await executor.start()
        await until(lambda: runner.active == 1, runner.changed)
        # A hint for the item running now is queued again: the runner's claim decides.
        await executor.send([chunk("a", 0)])
        after = await executor.depth()
        gate.set()
        await asyncio.wait_for(executor.join(), DEADLINE_S)
        await executor.close()
        return runner, before, after

    runner, before, after = run(body)
    assert (before, after) == (4, 4)  # 4 distinct queued; then a0 out, a0 in again
    assert runner.calls == [chunk("a", 0), plan("a"), chunk("a", 1), chunk("b", 1), chunk("a", 0)]


def test_close_cancels_running_work_after_the_grace_and_returns_promptly():
    async def body():
        runner = Runner(asyncio.Event())  # never set: the run would wait for ever
        executor = LocalExecutor(runner, 2, shutdown_grace_s=0.05)
        await executor.start()
        await executor.send([chunk("a", 0), chunk("a", 1), chunk("a", 2)])
        await until(lambda: runner.active == 2, runner.changed)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await executor.close()
        took = loop.time() - started
        await executor.send([chunk("a", 3)])  # after close: dropped (SQL keeps it)
        return runner, executor, took, await executor.depth()

    runner, executor, took, depth = run(body)
    assert set(runner.cancelled) == {chunk("a", 0), chunk("a", 1)}
    assert runner.active == 0 and executor.errors == 0
    assert 0.04 <= took < 5.0  # the grace (less the timer's resolution), then at once
    assert depth == 1  # the queued a2 stays unrun; a3 was not taken


def test_close_lets_work_that_ends_within_the_grace_finish():
    async def body():
        gate = asyncio.Event()
        runner = Runner(gate)
        executor = LocalExecutor(runner, 2, shutdown_grace_s=30.0)
        await executor.start()
        await executor.send([chunk("a", 0)])
        await until(lambda: runner.active == 1, runner.changed)
        closing = asyncio.create_task(executor.close())
        for _ in range(20):  # close() is now waiting on the running item
            await asyncio.sleep(0)
        waited = not closing.done()
        gate.set()
        await asyncio.wait_for(closing, DEADLINE_S)  # well before the 30 s grace
        return runner, waited

    runner, waited = run(body)
    assert waited and runner.cancelled == [] and runner.calls == [chunk("a", 0)]


def test_close_of_an_idle_or_unstarted_executor_returns_at_once():
    async def body():
        idle = LocalExecutor(Runner(), 4, shutdown_grace_s=30.0)
        await idle.start()
        await asyncio.wait_for(idle.close(), DEADLINE_S)  # idle consumers stop at once
        await idle.start()  # a closed executor does not start again
        await idle.send([chunk("a", 0)])
        unstarted = LocalExecutor(Runner(), 1)
        await unstarted.close()
        return await idle.depth()

    assert run(body) == 0
