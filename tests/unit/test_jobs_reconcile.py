"""The reconciler (frontend/jobs/reconcile.py, design §4.2) on a SQLite file: what was
dispatched and lost is sent again (once per pass), stalled jobs finish, the SQL gauges
follow the rows, and its loop outlives a failing pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from frontend.db import jobs
from frontend.db.database import Database
from frontend.db.jobs import Work
from frontend.errors import DatabaseUnavailable
from frontend.jobs import reconcile
from frontend.jobs.reconcile import PassCounts, Reconciler
from frontend.observability.metrics import Metrics
from frontend.settings import JobSettings

from .job_rows import (
    LEASE_S,
    NOW,
    Recorder,
    call,
    chunk_row,
    outcome,
    queued_job,
    running_job,
    scenario,
)

SETTINGS = JobSettings(redispatch_s=60.0, reconcile_s=0.001)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_ended_lease_is_sent_again_and_a_held_one_is_not(tmp_path):
    async def body(db: Database):
        job = await running_job(db, 1)
        await call(db, jobs.next_to_dispatch, job, 2, NOW - 40)  # 0 and 1, 40 s ago
        await call(db, jobs.claim_chunk, job, 0, "w:dead", NOW - 40, LEASE_S)  # ended at -10
        await call(db, jobs.claim_chunk, job, 1, "w:live", NOW - 40, LEASE_S)
        await call(db, jobs.renew_lease, job, 1, "w:live", NOW + 20)
        sent = Recorder()
        counts = await Reconciler(db, sent, SETTINGS, Metrics()).pass_once(NOW)
        return job, sent.items, counts, await chunk_row(db, job, 0), await chunk_row(db, job, 1)

    job, items, counts, ended, held = scenario(tmp_path, body)
    assert items == [Work("chunk", job, 0)] and counts == PassCounts(sent=1, finished=0)
    assert (ended["state"], ended["lease_owner"], ended["dispatched_at"]) == ("queued", None, NOW)
    assert (held["state"], held["lease_owner"]) == ("running", "w:live")


def test_undispatched_work_is_sent_once_per_pass_and_again_only_after_redispatch_s(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(reconcile, "STALE_BATCH", 2)  # several rounds within one pass

    async def body(db: Database):
        plans = [await queued_job(db, n) for n in (1, 2, 3)]
        job = await running_job(db, 9)
        await call(db, jobs.next_to_dispatch, job, 3, NOW - 10)
        for idx in (0, 1, 2):  # released for a retry: queued, and left undispatched
            await call(db, jobs.claim_chunk, job, idx, "w:1", NOW - 10, LEASE_S)
            await call(db, jobs.release_chunk, job, idx, "w:1", None)
        sent = Recorder()
        reconciler = Reconciler(db, sent, SETTINGS, Metrics())
        passes = [await reconciler.pass_once(at) for at in (NOW, NOW + 1, NOW + 61)]
        return plans, job, sent, passes

    plans, job, sent, passes = scenario(tmp_path, body)
    expected = [Work("plan", p) for p in plans] + [Work("chunk", job, i) for i in (0, 1, 2)]
    assert [p.sent for p in passes] == [6, 0, 6]
    first, again = sent.items[:6], sent.items[6:]
    assert sorted(first, key=repr) == sorted(expected, key=repr)  # each once, none twice
    assert sorted(again, key=repr) == sorted(expected, key=repr)  # a minute later: lost?
    assert all(len(batch) <= 3 * 2 for batch in sent.batches)  # STALE_BATCH of each kind


def test_the_start_pass_sends_every_queued_item_however_recent(tmp_path):
    async def body(db: Database):
        plan = await queued_job(db, 1, plan_dispatched_at=NOW - 1)
        job = await running_job(db, 2)
        await call(db, jobs.next_to_dispatch, job, 2, NOW - 1)
        sent = Recorder()
        reconciler = Reconciler(db, sent, SETTINGS, Metrics())
        normal = await reconciler.pass_once(NOW)
        start = await reconciler.start_pass(NOW)
        return plan, job, normal, start, sent.items

    plan, job, normal, start, items = scenario(tmp_path, body)
    assert normal.sent == 0 and start.sent == 3
    assert items == [Work("plan", plan), Work("chunk", job, 0), Work("chunk", job, 1)]


def test_stalled_jobs_finish_and_the_gauges_follow_the_rows(tmp_path):
    metrics = Metrics()

    async def body(db: Database):
        idle = await running_job(db, 1)
        busy = await running_job(db, 2)
        await call(db, jobs.next_to_dispatch, busy, 2, NOW)
        await call(db, jobs.claim_chunk, busy, 0, "w:1", NOW, LEASE_S)
        for job in (idle, busy):
            await call(db, jobs.transition, job, "cancelling", NOW)
        moving = await running_job(db, 3)
        await call(db, jobs.next_to_dispatch, moving, 2, NOW)
        await call(db, jobs.claim_chunk, moving, 0, "w:1", NOW, LEASE_S)
        await call(db, jobs.complete_chunk, moving, 0, outcome(), NOW + 10)  # 10 rows in 10 s
        await queued_job(db, 4, plan_dispatched_at=NOW)
        reconciler = Reconciler(db, Recorder(depth=7), SETTINGS, metrics)
        counts = await reconciler.pass_once(NOW + 11)
        states = {job: (await call(db, jobs.job, job)).state for job in (idle, busy)}
        rate = (await call(db, jobs.job, moving)).rate_rows_per_s
        return counts, states, rate

    counts, states, rate = scenario(tmp_path, body)
    assert counts == PassCounts(sent=0, finished=1)
    assert list(states.values()) == ["cancelled", "cancelling"]  # busy: its lease is held
    gauges = {state: sample(metrics, "infergate_jobs", state=state) for state in jobs.JOB_STATES}
    assert gauges == {
        "queued": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelling": 1,
        "cancelled": 1,
    }
    assert (
        sample(metrics, "infergate_job_queue_depth", where="sql") == 2
    )  # chunk 1 of busy and of moving
    assert sample(metrics, "infergate_job_queue_depth", where="broker") == 7
    assert rate == pytest.approx(1.0)
    assert sample(metrics, "infergate_job_rows_per_second") == pytest.approx(rate)


class Flaky:
    """The database, failing its first calls: down twice, then a bug once."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.errors: list[Exception] = [
            DatabaseUnavailable("the database is unreachable"),
            DatabaseUnavailable("the database is unreachable"),
            RuntimeError("a bug in a query"),
        ]

    async def run(self, operation: str, work: Any) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return await self._db.run(operation, work)


def test_the_loop_outlives_failing_passes_and_stops_on_cancel(tmp_path):
    async def body(db: Database):
        plan = await queued_job(db, 1)
        sent = Recorder()
        reconciler = Reconciler(Flaky(db), sent, SETTINGS, Metrics())  # type: ignore[arg-type]
        before = asyncio.all_tasks()
        loop = asyncio.create_task(reconciler.run())
        await asyncio.wait_for(sent.sent.wait(), 10)  # the fourth pass got through
        loop.cancel()  # often inside a database call of that pass
        with pytest.raises(asyncio.CancelledError):
            await loop
        # Nothing left behind: a transaction cut by the cancel would leave the driver's
        # connection close running, which then never ends once the database is closed.
        return plan, sent.items, reconciler.failures, asyncio.all_tasks() - before

    plan, items, failures, left = scenario(tmp_path, body)
    assert items[0] == Work("plan", plan) and failures == 3
    assert left == set()
