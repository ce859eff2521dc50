"""The retention sweep (frontend/jobs/retention.py, design §4.2) over LocalStorage and a
SQLite file: an expired job's files and rows go, a fresh job stays, stale temporary files
and orphan job directories go, expired idempotency keys go; a second sweep finds nothing.

Times here are real wall-clock times: the sweep compares file modification times."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from frontend.db import jobs
from frontend.db.database import Database
from frontend.jobs.reconcile import Reconciler
from frontend.jobs.retention import SweepCounts, sweep
from frontend.observability.metrics import Metrics
from frontend.settings import JobSettings
from frontend.storage.local import LocalStorage

from .job_rows import Recorder, call, count, running_job, scenario

T = time.time()
SETTINGS = JobSettings(tmp_max_age_s=7200.0)
HOUR = 3600.0


def put(storage: LocalStorage, key: str) -> None:
    writer = storage.writer(key)
    writer.write(b'{"text": "x"}\n')
    writer.commit()


def age(path: Path, seconds: float) -> None:
    os.utime(path, (T - seconds, T - seconds))


async def finished_job(db: Database, storage: LocalStorage, n: int, retention_s: float) -> str:
    """A job that ended 200 s ago, kept `retention_s` after that, with three files."""
    job = await running_job(db, n)
    await call(db, jobs.transition, job, "succeeded", T - 200, retention_s=retention_s)
    for key in ("inputs/0.csv", "results/000000-0123abcd.jsonl", "errors/000000-0123abcd.jsonl"):
        put(storage, f"jobs/{job}/{key}")
    return job


async def rows_of(db: Database, job: str) -> int:
    tables = ((jobs.JOBS, "id"), (jobs.CHUNKS, "job_id"), (jobs.FILES, "job_id"))
    return sum([await count(db, table, **{column: job}) for table, column in tables])


class Stuck(LocalStorage):
    """Storage whose deletes of one prefix fail (a volume gone read-only there)."""

    def __init__(self, root: Path, stuck: str) -> None:
        super().__init__(root, fsync=False)
        self.stuck = stuck

    def delete_prefix(self, prefix: str) -> None:
        if prefix == self.stuck:
            raise PermissionError(prefix)
        super().delete_prefix(prefix)


def test_a_sweep_removes_what_expired_and_keeps_the_rest(tmp_path):
    storage = LocalStorage(tmp_path / "store", fsync=False)
    root = storage.root / "jobs"

    async def body(db: Database):
        old = await finished_job(db, storage, 1, retention_s=100)  # expired 100 s ago
        kept = await finished_job(db, storage, 2, retention_s=10_000)
        age(root / kept, 2 * HOUR)  # old, but its job has a row: no orphan
        put(storage, "jobs/job_orphan_old/inputs/0.csv")
        age(root / "job_orphan_old", 2 * HOUR)
        put(storage, "jobs/job_orphan_new/inputs/0.csv")  # an upload before its insert
        stale, fresh = storage.writer("jobs/x/a"), storage.writer("jobs/x/b")
        age(stale.temp_path, 3 * HOUR)
        for at in (T - 90_000, T):  # a key remembered for a day: one expired, one not
            await call(db, jobs.claim_idempotency, "user:a", f"k{at}", "h", at, 86_400, 3_900)
        first = await sweep(db, storage, T, SETTINGS)
        again = await sweep(db, storage, T, SETTINGS)
        left = {
            "old_rows": await rows_of(db, old),
            "kept_rows": await rows_of(db, kept),
            "keys": await count(db, jobs.IDEMPOTENCY),
        }
        swept_away, fresh_there = not stale.temp_path.exists(), fresh.temp_path.exists()
        stale.abort()  # its file was swept: closes the handle only
        fresh.abort()
        return kept, first, again, left, swept_away, fresh_there

    kept, first, again, left, swept_away, fresh_there = scenario(tmp_path, body)
    assert first == SweepCounts(jobs=1, idempotency_keys=1, temp_files=1, orphans=1)
    assert again == SweepCounts()  # idempotent: nothing left to take
    assert left == {"old_rows": 0, "kept_rows": 1 + 4 + 1, "keys": 1}
    assert sorted(p.name for p in root.iterdir()) == sorted([kept, "job_orphan_new"])
    assert len(list((root / kept).rglob("*.jsonl"))) == 2
    assert swept_away and fresh_there  # the stale temporary file only


def test_expired_jobs_go_a_few_per_sweep_and_files_before_rows(tmp_path):
    storage = LocalStorage(tmp_path / "store", fsync=False)

    async def body(db: Database):
        ids = [await finished_job(db, storage, n, retention_s=100) for n in (1, 2, 3)]
        failing = Stuck(storage.root, f"jobs/{ids[0]}/")
        first = await sweep(db, failing, T, SETTINGS, limit=2)
        second = await sweep(db, failing, T, SETTINGS, limit=2)
        rows = [await rows_of(db, job) for job in ids]
        return ids, first.jobs, second.jobs, rows

    ids, first, second, rows = scenario(tmp_path, body)
    assert (first, second) == (1, 1)  # two per sweep, the stuck one among them each time
    assert rows == [6, 0, 0]  # its files could not go: its rows stay for the next sweep
    assert (storage.root / "jobs" / ids[0] / "inputs" / "0.csv").exists()


def test_the_reconciler_loop_sweeps_when_given_storage(tmp_path):
    storage = LocalStorage(tmp_path / "store", fsync=False)

    async def body(db: Database):
        old = await finished_job(db, storage, 1, retention_s=100)
        reconciler = Reconciler(
            db, Recorder(), JobSettings(reconcile_s=0.001), Metrics(), storage=storage
        )
        swept = asyncio.Event()
        counts: list[SweepCounts] = []
        sweep_once = reconciler.sweep_once

        async def recorded(now: float | None = None) -> SweepCounts:
            counts.append(await sweep_once(now))
            swept.set()
            return counts[-1]

        reconciler.sweep_once = recorded  # type: ignore[method-assign]
        loop = asyncio.create_task(reconciler.run())
        await asyncio.wait_for(swept.wait(), 10)
        loop.cancel()
        await asyncio.wait([loop])
        return old, counts, await rows_of(db, old)

    old, counts, rows = scenario(tmp_path, body)
    assert counts[0].jobs == 1 and rows == 0
    assert not (storage.root / "jobs" / old).exists()
