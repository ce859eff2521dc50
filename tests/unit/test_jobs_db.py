"""The batch jobs' queries (frontend/db/jobs.py and the modules it re-exports) on a SQLite
FILE migrated to head, so concurrent transactions are real: each `Database.run` is its
own connection and SQLite's one writer decides between them, as PostgreSQL's row locks
do. What must hold exactly: one idempotency claim per key, admission under the limits,
one winning commit per chunk, leases, the state machine, keyset pages, the reconciler's
finds and retention's deletes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontend.db import jobs, migrate
from frontend.db.database import Database
from frontend.db.jobs import (
    ChunkOutcome,
    IdemClaim,
    JobFileRow,
    JobRow,
    Work,
)
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings

T = TypeVar("T")
NOW = 1_800_000_000.0  # 2027-01-15, some time in a UTC day
TODAY = jobs.utc_day(NOW)
LEASE_S = 30.0
# Generous deadlines: these tests count outcomes under contention, not time.
SETTINGS = DatabaseSettings(deadline_s=20.0, statement_timeout_s=10.0)


@dataclass(frozen=True, slots=True)
class Plan:  # the shape of frontend/jobs/plan.py's ChunkPlan
    file_idx: int
    idx: int
    start_offset: int
    end_offset: int
    first_row: int
    rows: int


@dataclass(frozen=True, slots=True)
class Limits:  # the shape of frontend/jobs/limits.py's JobLimits
    rows_per_day: int | None
    concurrent: int | None


def scenario(tmp_path: Path, body: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", SETTINGS, Metrics())
        await migrate.upgrade(db.engine)
        try:
            return await body(db)
        finally:
            await db.close()

    return asyncio.run(run())


def call(db: Database, query: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any):
    """`query(session, *args, **kwargs)` in its own transaction."""
    return db.run(query.__name__, lambda s: query(s, *args, **kwargs))


def new_job(n: int, *, owner: str = "user:a", created_at: float = NOW, **fields: Any) -> JobRow:
    return JobRow(
        id=f"job_{n:026d}",
        owner=owner,
        account=fields.pop("account", owner),
        subject="key:1",
        tier="free",
        model=fields.pop("model", "intent"),
        version="2",
        task="text-classification",
        created_at=created_at,
        updated_at=created_at,
        parameters={"top_k": 1},
        **fields,
    )


FILE = JobFileRow(
    idx=0,
    name="rows.csv",
    format="csv",
    bytes=1_000,
    sha256="ab" * 32,
    storage_key="jobs/x/inputs/0.csv",
    header=["id", "text"],
)


def plans(n: int, rows: int = 10) -> list[Plan]:
    return [Plan(0, i, i * 100, (i + 1) * 100, i * rows + 1, rows) for i in range(n)]


async def running_job(db: Database, n: int = 1, chunks: int = 4, **fields: Any) -> str:
    """A planned, running job of `chunks` pending chunks of 10 rows."""
    job = new_job(n, **fields)
    await call(db, jobs.insert_job, job, [FILE])
    await call(db, jobs.add_chunks, job.id, plans(chunks))
    planned = await call(db, jobs.finish_planning, job.id, chunks * 10, chunks, [(1, 40)], NOW)
    assert planned
    return job.id


async def chunk(db: Database, job_id: str, idx: int) -> dict[str, Any]:
    async def read(s: AsyncSession) -> dict[str, Any]:
        c = jobs.CHUNKS.c
        found = await s.execute(select(jobs.CHUNKS).where(c.job_id == job_id, c.idx == idx))
        return dict(found.one()._mapping)

    return await db.run("read", read)


async def count(db: Database, table: Any, **where: Any) -> int:
    async def read(s: AsyncSession) -> int:
        query = select(func.count()).select_from(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        return int((await s.execute(query)).scalar_one())

    return await db.run("count", read)


def outcome(token: str = "0123abcd", ok: int = 9, failed: int = 1) -> ChunkOutcome:
    return ChunkOutcome(token, ok, failed, results_bytes=900, csv_bytes=400, errors_bytes=80)


# --- rows, states ------------------------------------------------------------------------


def test_the_snapshots_name_every_column_and_the_states_are_the_designs():
    assert {f.name for f in dataclasses.fields(JobRow)} == set(jobs.JOBS.c.keys())
    assert {f.name for f in dataclasses.fields(JobFileRow)} | {"job_id"} == set(jobs.FILES.c.keys())
    assert jobs.JOB_STATES == (
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelling",
        "cancelled",
    )
    assert set(jobs.TERMINAL_STATES) == {"succeeded", "failed", "cancelled"}
    assert jobs.CHUNK_STATES == ("pending", "queued", "running", "done", "skipped")
    assert set(jobs.TRANSITIONS) == set(jobs.JOB_STATES)
    assert jobs.utc_day(NOW) % 86_400 == 0 and 0 <= NOW - jobs.utc_day(NOW) < 86_400


def test_a_job_and_its_files_read_back_as_inserted_and_only_by_their_owner(tmp_path):
    job = new_job(
        1,
        key_limits={"tokens_per_minute": 100},
        meta={"team": "x"},
        columns=["id"],
        idempotency_key="k",
        request_id="r-1",
    )
    second = dataclasses.replace(FILE, idx=1, name="more.jsonl", format="jsonl", header=None)

    async def body(db: Database):
        await call(db, jobs.insert_job, job, [FILE, second])
        return (
            await call(db, jobs.job, job.id),
            await call(db, jobs.owned, job.id, "user:a"),
            await call(db, jobs.owned, job.id, "user:b"),
            await call(db, jobs.owned, job.id, None),
            await call(db, jobs.job, "job_missing"),
            await call(db, jobs.files, job.id),
        )

    read, mine, others, admin, missing, files = scenario(tmp_path, body)
    assert read == mine == admin == job
    assert others is None and missing is None  # another owner's job: as absent
    assert files == [FILE, second]
    assert not read.terminal


def test_pages_are_newest_first_without_duplicates_or_gaps(tmp_path):
    """Keyset pages over ties in created_at, and a job submitted between two pages
    shows up on no later page and shifts nothing."""
    times = [NOW - (n // 3) for n in range(20)]  # three jobs per second: ties

    async def body(db: Database):
        for n, at in enumerate(times):
            owner = "user:a" if n % 4 else "user:b"
            model = "intent" if n % 2 else "ner"
            await call(db, jobs.insert_job, new_job(n, owner=owner, created_at=at, model=model), [])
        everyone = await call(
            db, jobs.page, owner=None, states=None, model=None, after=None, limit=100
        )
        pages, after = [], None
        while True:
            got = await call(
                db, jobs.page, owner=None, states=None, model=None, after=after, limit=6
            )
            if not got:
                break
            pages.append(got)
            after = (got[-1].created_at, got[-1].id)
            if len(pages) == 1:  # a newer job arrives meanwhile
                await call(db, jobs.insert_job, new_job(99, created_at=NOW + 10), [])
        own = await call(
            db, jobs.page, owner="user:b", states=["queued"], model="ner", after=None, limit=100
        )
        none = await call(
            db, jobs.page, owner=None, states=["running"], model=None, after=None, limit=100
        )
        return everyone, pages, own, none

    everyone, pages, own, none = scenario(tmp_path, body)
    keys = [(j.created_at, j.id) for j in everyone]
    assert keys == sorted(keys, reverse=True) and len(keys) == 20
    assert [len(p) for p in pages] == [6, 6, 6, 2]
    assert [j.id for p in pages for j in p] == [j.id for j in everyone]
    assert {j.owner for j in own} == {"user:b"} and {j.model for j in own} == {"ner"}
    assert [j.id for j in own] == [
        j.id for j in everyone if j.owner == "user:b" and j.model == "ner"
    ]
    assert none == []


# --- planning, dispatch -------------------------------------------------------------------


def test_planning_is_idempotent_and_finishes_once(tmp_path):
    job = new_job(1)

    async def body(db: Database):
        await call(db, jobs.insert_job, job, [FILE])
        await call(db, jobs.add_chunks, job.id, plans(5))
        # A second planning run (a duplicate message) inserts the same plans again.
        await call(db, jobs.add_chunks, job.id, plans(7))
        with pytest.raises(ValueError, match="at most 1000 chunks"):
            await call(db, jobs.add_chunks, job.id, plans(1_001))
        first = await call(db, jobs.finish_planning, job.id, 70, 7, [(1, 70)], NOW + 1)
        again = await call(db, jobs.finish_planning, job.id, 70, 7, [(1, 70)], NOW + 2)
        return (
            first,
            again,
            await count(db, jobs.CHUNKS, job_id=job.id),
            await count(db, jobs.CHUNKS, state="pending"),
            await call(db, jobs.job, job.id),
            await call(db, jobs.files, job.id),
        )

    first, again, chunks, pending, read, files = scenario(tmp_path, body)
    assert (first, again) == (True, False)
    assert chunks == pending == 7
    assert read.state == "running" and read.planned and read.started_at == NOW + 1
    assert (read.rows_total, read.chunks_total, read.seq) == (70, 7, 1)
    assert (files[0].first_row, files[0].rows) == (1, 70)


def test_a_thousand_chunks_go_in_one_call(tmp_path):
    async def body(db: Database):
        await call(db, jobs.insert_job, new_job(1), [FILE])
        await call(db, jobs.add_chunks, new_job(1).id, plans(1_000))
        await call(db, jobs.add_chunks, new_job(1).id, plans(1_000))
        return await count(db, jobs.CHUNKS)

    assert scenario(tmp_path, body) == 1_000


def test_dispatch_keeps_a_window_of_chunks_in_flight(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db, chunks=6)
        first = await call(db, jobs.next_to_dispatch, job_id, 3, NOW)
        full = await call(db, jobs.next_to_dispatch, job_id, 3, NOW)
        claim = await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        assert claim is not None
        still = await call(db, jobs.next_to_dispatch, job_id, 3, NOW)  # running counts
        await call(db, jobs.complete_chunk, job_id, 0, outcome(), NOW + 1)
        after = await call(db, jobs.next_to_dispatch, job_id, 3, NOW + 1)
        queued = await call(db, jobs.queued_chunks)
        await call(db, jobs.transition, job_id, "cancelling", NOW + 2)
        cancelling = await call(db, jobs.next_to_dispatch, job_id, 10, NOW + 2)
        return first, full, still, after, queued, cancelling, await chunk(db, job_id, 3)

    first, full, still, after, queued, cancelling, fourth = scenario(tmp_path, body)
    assert first == [0, 1, 2] and full == [] and still == []
    assert after == [3] and queued == 3
    assert cancelling == []  # a cancelling job starts nothing new
    assert fourth["state"] == "queued" and fourth["dispatched_at"] == NOW + 1


def test_concurrent_dispatches_never_exceed_the_window(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db, chunks=20)
        picks = await asyncio.gather(
            *(call(db, jobs.next_to_dispatch, job_id, 3, NOW) for _ in range(10))
        )
        return sorted(idx for pick in picks for idx in pick)

    assert scenario(tmp_path, body) == [0, 1, 2]


# --- leases --------------------------------------------------------------------------------


def test_a_held_lease_is_refused_an_ended_one_is_taken_over_and_attempts_count(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db)
        pending = await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        await call(db, jobs.next_to_dispatch, job_id, 1, NOW)
        first = await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        held = await call(db, jobs.claim_chunk, job_id, 0, "w:2", NOW + 29, LEASE_S)
        renewed = await call(db, jobs.renew_lease, job_id, 0, "w:1", NOW + 50)
        still_held = await call(db, jobs.claim_chunk, job_id, 0, "w:2", NOW + 40, LEASE_S)
        taken = await call(db, jobs.claim_chunk, job_id, 0, "w:2", NOW + 51, LEASE_S)
        lost = await call(db, jobs.renew_lease, job_id, 0, "w:1", NOW + 90)
        not_mine = await call(db, jobs.release_chunk, job_id, 0, "w:1", None)
        released = await call(db, jobs.release_chunk, job_id, 0, "w:2", NOW + 120)
        early = await call(db, jobs.claim_chunk, job_id, 0, "w:3", NOW + 119, LEASE_S)
        third = await call(db, jobs.claim_chunk, job_id, 0, "w:3", NOW + 120, LEASE_S)
        return (
            pending,
            first,
            held,
            renewed,
            still_held,
            taken,
            lost,
            not_mine,
            released,
            early,
            third,
        )

    pending, first, held, renewed, still_held, taken, lost, not_mine, released, early, third = (
        scenario(tmp_path, body)
    )
    assert pending is None  # not dispatched yet
    assert first is not None and (first.attempts, first.lease_owner) == (1, "w:1")
    assert first.lease_until == NOW + LEASE_S
    assert (first.start_offset, first.end_offset, first.first_row, first.rows) == (0, 100, 1, 10)
    assert held is None and renewed and still_held is None
    assert taken is not None and (taken.attempts, taken.lease_owner) == (2, "w:2")
    assert not lost and not not_mine and released
    assert early is None  # deferred until not_before
    assert third is not None and third.attempts == 3


def test_ten_concurrent_claims_of_one_chunk_give_one_lease(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db)
        await call(db, jobs.next_to_dispatch, job_id, 1, NOW)
        claims = await asyncio.gather(
            *(call(db, jobs.claim_chunk, job_id, 0, f"w:{n}", NOW, LEASE_S) for n in range(10))
        )
        return claims, await chunk(db, job_id, 0)

    claims, row = scenario(tmp_path, body)
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and row["attempts"] == 1 and row["lease_owner"] == won[0].lease_owner


def test_a_chunk_of_a_job_that_is_not_running_is_not_claimed_but_can_be_skipped(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db)
        await call(db, jobs.next_to_dispatch, job_id, 2, NOW)
        await call(db, jobs.claim_chunk, job_id, 1, "w:1", NOW, LEASE_S)
        await call(db, jobs.transition, job_id, "cancelling", NOW)
        refused = await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        skipped = await call(db, jobs.skip_chunk, job_id, 0)
        live = await call(db, jobs.live_chunks, job_id, NOW)
        dead = await call(db, jobs.live_chunks, job_id, NOW + LEASE_S + 1)
        return refused, skipped, live, dead, (await chunk(db, job_id, 0))["state"]

    refused, skipped, live, dead, state = scenario(tmp_path, body)
    assert refused is None and skipped and state == "skipped"
    assert (live, dead) == (1, 0)  # chunk 1's lease, then past it


# --- the commit ------------------------------------------------------------------------------


def test_a_chunk_committed_twice_counts_once(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db, chunks=2)
        await call(db, jobs.next_to_dispatch, job_id, 2, NOW)
        await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        first = await call(db, jobs.complete_chunk, job_id, 0, outcome("aaaa0000"), NOW + 10)
        second = await call(db, jobs.complete_chunk, job_id, 0, outcome("bbbb1111"), NOW + 11)
        return first, second, await call(db, jobs.job, job_id), await chunk(db, job_id, 0)

    first, second, job, row = scenario(tmp_path, body)
    assert first.won and not second.won and not first.last
    assert (first.rows_done, first.rows_failed, first.chunks_done, first.chunks_total) == (
        9,
        1,
        1,
        2,
    )
    assert (job.rows_done, job.rows_failed, job.chunks_done, job.seq) == (9, 1, 1, 2)
    assert row["output_token"] == "aaaa0000" and row["state"] == "done"
    assert (row["results_bytes"], row["csv_bytes"], row["errors_bytes"]) == (900, 400, 80)
    assert row["lease_owner"] is None and row["finished_at"] == NOW + 10
    assert job.rate_rows_per_s == pytest.approx(10 / 10)  # 10 rows since the start
    assert job.last_commit_at == NOW + 10


def test_concurrent_commits_have_one_winner_per_chunk_and_exact_counters(tmp_path):
    """Ten attempts per chunk for four chunks, all at once: four winners, counters as
    if each chunk had run once, and the last winner sees the job complete."""

    async def body(db: Database):
        job_id = await running_job(db, chunks=4)
        await call(db, jobs.next_to_dispatch, job_id, 4, NOW)
        attempts = [
            call(db, jobs.complete_chunk, job_id, idx, outcome(f"{idx:02d}{n:06d}"), NOW + 5)
            for n in range(10)
            for idx in range(4)
        ]
        results = await asyncio.gather(*attempts)
        return results, await call(db, jobs.job, job_id), await call(db, jobs.done_chunks, job_id)

    results, job, done = scenario(tmp_path, body)
    won = [r for r in results if r.won]
    assert len(won) == 4
    assert sorted(r.chunks_done for r in won) == [1, 2, 3, 4]
    assert [r.last for r in won].count(True) == 1
    assert (job.rows_done, job.rows_failed, job.chunks_done, job.seq) == (36, 4, 4, 1 + 4)
    assert [d.idx for d in done] == [0, 1, 2, 3]
    assert all(d.output_token.startswith(f"{d.idx:02d}") for d in done)


def test_a_commit_after_the_job_failed_loses(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db)
        await call(db, jobs.next_to_dispatch, job_id, 2, NOW)
        await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        error = {"code": "chunk_failed", "message": "chunk 1 failed 21 times"}
        failed = await call(db, jobs.transition, job_id, "failed", NOW + 1, error=error)
        late = await call(db, jobs.complete_chunk, job_id, 0, outcome(), NOW + 2)
        states = [(await chunk(db, job_id, i))["state"] for i in range(4)]
        return failed, late, states, await call(db, jobs.job, job_id)

    failed, late, states, job = scenario(tmp_path, body)
    assert failed and not late.won
    assert states == ["skipped"] * 4
    assert job.state == "failed" and job.error == {
        "code": "chunk_failed",
        "message": "chunk 1 failed 21 times",
    }
    assert job.rows_done == 0 and job.finished_at == NOW + 1


# --- the state machine ---------------------------------------------------------------------


def test_transitions_follow_the_table_and_nothing_leaves_a_terminal_state(tmp_path):
    pairs = [(a, b) for a in jobs.JOB_STATES for b in jobs.JOB_STATES]

    async def body(db: Database):
        outcomes = {}
        for n, (source, target) in enumerate(pairs):
            await call(db, jobs.insert_job, new_job(n, state=source), [])
            outcomes[source, target] = await call(db, jobs.transition, new_job(n).id, target, NOW)
        with pytest.raises(ValueError, match="unknown job state"):
            await call(db, jobs.transition, new_job(0).id, "paused", NOW)
        return outcomes

    outcomes = scenario(tmp_path, body)
    for (source, target), moved in outcomes.items():
        assert moved == (target in jobs.TRANSITIONS[source]), (source, target)
    for terminal in jobs.TERMINAL_STATES:
        assert not any(outcomes[terminal, target] for target in jobs.JOB_STATES)
    assert outcomes["running", "cancelling"] and outcomes["cancelling", "cancelled"]
    assert not outcomes["cancelling", "running"] and not outcomes["queued", "succeeded"]


def test_a_terminal_transition_releases_the_active_job_and_sets_the_expiry(tmp_path):
    limits = Limits(rows_per_day=None, concurrent=1)

    async def body(db: Database):
        first = await call(db, jobs.admit, "user:a", 10, limits, TODAY)
        await call(db, jobs.insert_job, new_job(1), [])
        busy = await call(db, jobs.admit, "user:a", 10, limits, TODAY)
        cancelled = await call(db, jobs.transition, new_job(1).id, "cancelled", NOW, retention_s=60)
        again = await call(db, jobs.transition, new_job(1).id, "cancelled", NOW + 1)
        free = await call(db, jobs.admit, "user:a", 10, limits, TODAY)
        return first, busy, cancelled, again, free, await call(db, jobs.job, new_job(1).id)

    first, busy, cancelled, again, free, job = scenario(tmp_path, body)
    assert first.admitted and not busy.admitted and busy.limit == "concurrent_jobs"
    assert cancelled and not again  # released once only
    assert free.admitted and free.active == 1
    assert (job.state, job.finished_at, job.expires_at, job.seq) == ("cancelled", NOW, NOW + 60, 1)


def test_the_reconciler_finishes_stalled_jobs(tmp_path):
    async def body(db: Database):
        idle = await running_job(db, 1)
        busy = await running_job(db, 2)
        complete = await running_job(db, 3, chunks=1)
        await call(db, jobs.next_to_dispatch, busy, 1, NOW)
        await call(db, jobs.claim_chunk, busy, 0, "w:1", NOW, LEASE_S)
        for job_id in (idle, busy):
            await call(db, jobs.transition, job_id, "cancelling", NOW)
        # The last commit landed, but the finish did not (another transaction's job).
        await call(db, jobs.next_to_dispatch, complete, 1, NOW)
        await call(db, jobs.complete_chunk, complete, 0, outcome(), NOW + 1)
        finished = await call(db, jobs.finish_stalled, NOW + 2, 10)
        later = await call(db, jobs.finish_stalled, NOW + LEASE_S + 1, 10)
        counts = await call(db, jobs.state_counts)
        return idle, busy, complete, finished, later, counts

    idle, busy, complete, finished, later, counts = scenario(tmp_path, body)
    assert sorted(finished) == sorted([(idle, "cancelled"), (complete, "succeeded")])
    assert later == [(busy, "cancelled")]  # its worker's lease ended: nobody runs it
    assert counts == dict.fromkeys(jobs.JOB_STATES, 0) | {"succeeded": 1, "cancelled": 2}


# --- the reconciler's stale work -------------------------------------------------------------


def test_stale_work_finds_undispatched_plans_and_chunks_and_ended_leases(tmp_path):
    async def body(db: Database):
        await call(db, jobs.insert_job, new_job(1), [FILE])  # never dispatched
        sent = new_job(2, plan_dispatched_at=NOW - 5)  # dispatched recently
        await call(db, jobs.insert_job, sent, [FILE])
        job_id = await running_job(db, 3, chunks=4)
        await call(db, jobs.next_to_dispatch, job_id, 3, NOW - 100)  # 0, 1, 2 long ago
        await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW - 100, LEASE_S)  # ended lease
        await call(db, jobs.claim_chunk, job_id, 1, "w:1", NOW - 100, LEASE_S)
        await call(db, jobs.renew_lease, job_id, 1, "w:1", NOW + 60)  # held
        await call(db, jobs.claim_chunk, job_id, 2, "w:1", NOW - 100, LEASE_S)
        await call(db, jobs.release_chunk, job_id, 2, "w:1", NOW + 30)  # deferred
        first = await call(db, jobs.stale_work, NOW, 60, 100)
        row = await chunk(db, job_id, 0)
        repeat = await call(db, jobs.stale_work, NOW, 60, 100)
        deferred = await call(db, jobs.stale_work, NOW + 30, 60, 100)
        restart = await call(db, jobs.stale_work, NOW + 31, 0, 100)
        return first, repeat, deferred, restart, row, job_id

    first, repeat, deferred, restart, row, job_id = scenario(tmp_path, body)
    assert first == [Work("plan", new_job(1).id), Work("chunk", job_id, 0)]
    assert row["state"] == "queued" and row["lease_owner"] is None
    assert row["dispatched_at"] == NOW and row["attempts"] == 1
    assert repeat == []  # just dispatched: not again within redispatch_s
    assert deferred == [Work("chunk", job_id, 2)]  # once its not_before passed
    # An executor starting after its process died: every queued thing again.
    assert restart == [
        Work("plan", new_job(1).id),
        Work("plan", new_job(2).id),
        Work("chunk", job_id, 0),
        Work("chunk", job_id, 2),
    ]


def test_concurrent_reconcilers_take_each_stale_item_once(tmp_path):
    async def body(db: Database):
        for n in range(5):
            await call(db, jobs.insert_job, new_job(n), [])
        job_id = await running_job(db, 9, chunks=20)
        await call(db, jobs.next_to_dispatch, job_id, 20, NOW - 100)
        passes = await asyncio.gather(*(call(db, jobs.stale_work, NOW, 60, 100) for _ in range(6)))
        return [item for items in passes for item in items]

    work = scenario(tmp_path, body)
    assert len(work) == len(set(work)) == 5 + 20


# --- limits -----------------------------------------------------------------------------------


def test_a_hundred_concurrent_admissions_against_three_admit_exactly_three(tmp_path):
    limits = Limits(rows_per_day=None, concurrent=3)

    async def body(db: Database):
        answers = await asyncio.gather(
            *(call(db, jobs.admit, "user:a", 5, limits, TODAY) for _ in range(100))
        )
        other = await call(db, jobs.admit, "user:b", 5, limits, TODAY)  # its own count
        return answers, other

    answers, other = scenario(tmp_path, body)
    admitted = [a for a in answers if a.admitted]
    refused = [a for a in answers if not a.admitted]
    assert len(admitted) == 3 and sorted(a.active for a in admitted) == [1, 2, 3]
    assert len(refused) == 97
    assert {(a.limit, a.used, a.limit_value, a.requested) for a in refused} == {
        ("concurrent_jobs", 3, 3, 5)
    }
    assert other.admitted and other.active == 1


def test_the_rows_per_day_cap_is_exact_and_starts_again_each_utc_day(tmp_path):
    limits = Limits(rows_per_day=1_000, concurrent=None)
    tomorrow = TODAY + 86_400

    async def body(db: Database):
        answers = await asyncio.gather(
            *(call(db, jobs.admit, "user:a", 30, limits, TODAY) for _ in range(50))
        )
        fits = await call(db, jobs.admit, "user:a", 10, limits, TODAY)  # 990 + 10
        over = await call(db, jobs.admit, "user:a", 1, limits, TODAY)
        huge = await call(db, jobs.admit, "user:b", 1_001, limits, TODAY)
        # Planning found fewer rows than estimated: 30 given back (never below 0).
        await call(db, jobs.settle_rows, "user:a", TODAY, -30)
        settled = await call(db, jobs.admit, "user:a", 30, limits, TODAY)
        await call(db, jobs.settle_rows, "user:b", TODAY, -5_000)
        new_day = await call(db, jobs.admit, "user:a", 1_000, limits, tomorrow)
        await call(db, jobs.settle_rows, "user:a", TODAY, -500)  # a day gone: no effect
        full = await call(db, jobs.admit, "user:a", 1, limits, tomorrow)
        zeroed = await call(db, jobs.admit, "user:b", 1_000, limits, TODAY)
        return answers, fits, over, huge, settled, new_day, full, zeroed

    answers, fits, over, huge, settled, new_day, full, zeroed = scenario(tmp_path, body)
    assert sum(a.admitted for a in answers) == 33  # 33 × 30 = 990 ≤ 1000 < 34 × 30
    assert {a.used for a in answers if not a.admitted} == {990}
    assert fits.admitted and fits.rows_day == 1_000
    assert not over.admitted and (over.limit, over.used, over.limit_value) == (
        "job_rows_per_day",
        1_000,
        1_000,
    )
    assert not huge.admitted and huge.requested == 1_001 and huge.used == 0
    assert settled.admitted and settled.rows_day == 1_000
    assert new_day.admitted and (new_day.rows_day, new_day.day) == (1_000, tomorrow)
    assert new_day.active == 36  # concurrency unlimited here: every admitted job counts
    assert not full.admitted
    assert zeroed.admitted


# --- idempotency --------------------------------------------------------------------------------


def test_ten_concurrent_claims_of_one_key_let_exactly_one_in(tmp_path):
    async def body(db: Database):
        claims = await asyncio.gather(
            *(
                call(db, jobs.claim_idempotency, "user:a", "k1", "h1", NOW, 86_400, 3_900)
                for _ in range(10)
            )
        )
        return claims, await count(db, jobs.IDEMPOTENCY)

    claims, rows = scenario(tmp_path, body)
    assert sorted(c.outcome for c in claims) == ["claimed"] + ["in_progress"] * 9
    assert rows == 1


def test_a_key_replays_its_job_refuses_another_body_and_frees_after_failure_or_expiry(tmp_path):
    def claim(db: Database, hash_: str | None, now: float = NOW, key: str = "k1"):
        return call(db, jobs.claim_idempotency, "user:a", key, hash_, now, 86_400, 3_900)

    async def body(db: Database):
        out: dict[str, Any] = {"first": await claim(db, "h1")}
        first: IdemClaim = out["first"]
        out["stolen_bind"] = await call(
            db, jobs.bind_idempotency, "user:a", "k1", "job_1", "h1", claimed_at=NOW - 1
        )
        out["bind"] = await call(
            db, jobs.bind_idempotency, "user:a", "k1", "job_1", "h1", claimed_at=first.created_at
        )
        out["replay"] = await claim(db, "h1", NOW + 1)
        out["reused"] = await claim(db, "h2", NOW + 1)
        out["unknown"] = await claim(db, None, NOW + 1)  # multipart, before its body
        out["other_owner"] = await call(
            db, jobs.claim_idempotency, "user:b", "k1", "h2", NOW, 86_400, 3_900
        )
        out["drop_done"] = await call(db, jobs.drop_idempotency, "user:a", "k1")
        out["expired"] = await claim(db, "h2", NOW + 86_401)
        # A submission that fails gives the key back; one whose submitter died, later.
        out["k2"] = await claim(db, "h1", key="k2")
        out["k2_twin"] = await claim(db, "h1", NOW + 3_000, key="k2")
        out["k2_abandoned"] = await claim(db, "h1", NOW + 3_901, key="k2")
        out["k2_drop_old"] = await call(db, jobs.drop_idempotency, "user:a", "k2", claimed_at=NOW)
        out["k2_drop"] = await call(
            db, jobs.drop_idempotency, "user:a", "k2", claimed_at=NOW + 3_901
        )
        out["k2_free"] = await claim(db, "h3", NOW + 3_902, key="k2")
        out["swept"] = await call(db, jobs.drop_expired_idempotency, NOW + 3 * 86_400)
        return out

    out = scenario(tmp_path, body)
    assert out["first"] == IdemClaim("claimed", None, "h1", NOW)
    assert not out["stolen_bind"] and out["bind"]
    assert out["replay"] == IdemClaim("replay", "job_1", "h1", NOW)
    assert out["reused"].outcome == "reused" and out["reused"].job_id == "job_1"
    assert out["unknown"] == IdemClaim("done", "job_1", "h1", NOW)
    assert out["other_owner"].outcome == "claimed"  # keys are per owner
    assert not out["drop_done"]  # a done key stays until it expires
    assert out["expired"].outcome == "claimed"
    assert out["k2"].outcome == "claimed" and out["k2_twin"].outcome == "in_progress"
    assert out["k2_abandoned"] == IdemClaim("claimed", None, "h1", NOW + 3_901)
    assert not out["k2_drop_old"] and out["k2_drop"]  # only the current claim's own
    assert out["k2_free"].outcome == "claimed"
    assert out["swept"] == 3  # every key of this test, expired by then


# --- retention, counts --------------------------------------------------------------------------


def test_expired_jobs_are_listed_and_delete_job_removes_every_row(tmp_path):
    async def body(db: Database):
        limits = Limits(rows_per_day=None, concurrent=None)
        old = await running_job(db, 1)
        kept = await running_job(db, 2)
        live = await running_job(db, 3)
        for _ in range(3):
            await call(db, jobs.admit, "user:a", 40, limits, TODAY)
        await call(db, jobs.claim_idempotency, "user:a", "k", "h", NOW, 86_400, 3_900)
        await call(db, jobs.bind_idempotency, "user:a", "k", old, "h")
        await call(db, jobs.next_to_dispatch, old, 2, NOW)
        await call(db, jobs.complete_chunk, old, 0, outcome(), NOW)
        await call(db, jobs.transition, old, "succeeded", NOW, retention_s=100)
        await call(db, jobs.transition, kept, "failed", NOW, retention_s=1_000)
        listed = await call(db, jobs.expired, NOW + 101, 50)
        deleted = await call(db, jobs.delete_job, old)
        gone = await call(db, jobs.delete_job, old)
        rows = {
            name: await count(db, table, job_id=old)
            for name, table in (
                ("chunks", jobs.CHUNKS),
                ("files", jobs.FILES),
                ("keys", jobs.IDEMPOTENCY),
            )
        }
        rows["jobs"] = await count(db, jobs.JOBS, id=old)
        others = await count(db, jobs.CHUNKS, job_id=kept)
        # A job deleted before it finished gives back its active slot.
        await call(db, jobs.delete_job, live)
        return listed, deleted, gone, rows, others, await active(db, "user:a")

    listed, deleted, gone, rows, others, left = scenario(tmp_path, body)
    assert listed == [new_job(1).id]
    assert deleted and not gone
    assert rows == {"chunks": 0, "files": 0, "keys": 0, "jobs": 0}
    assert others == 4
    assert left == 0  # each of the three released its slot once: two finished, one deleted


async def active(db: Database, account: str) -> int:
    async def read(s: AsyncSession) -> int:
        a = jobs.ACCOUNTS.c
        return int((await s.execute(select(a.active).where(a.account == account))).scalar_one())

    return await db.run("active", read)


def test_waiting_is_shown_until_the_next_commit(tmp_path):
    async def body(db: Database):
        job_id = await running_job(db)
        await call(db, jobs.next_to_dispatch, job_id, 1, NOW)
        await call(db, jobs.claim_chunk, job_id, 0, "w:1", NOW, LEASE_S)
        waiting = {"reason": "model_unavailable", "until": NOW + 8}
        await call(db, jobs.set_waiting, job_id, waiting, NOW)
        shown = await call(db, jobs.job, job_id)
        await call(db, jobs.complete_chunk, job_id, 0, outcome(), NOW + 9)
        cleared = await call(db, jobs.job, job_id)
        await call(db, jobs.transition, job_id, "failed", NOW + 10)
        refused = await call(db, jobs.set_waiting, job_id, waiting, NOW + 11)
        return shown, cleared, refused

    shown, cleared, refused = scenario(tmp_path, body)
    assert shown.waiting == {"reason": "model_unavailable", "until": NOW + 8}
    assert shown.seq == 2 and cleared.waiting is None and cleared.seq == 3
    assert not refused
