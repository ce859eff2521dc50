"""Chunk queries: planning's inserts, the lease a worker holds while it runs a chunk, the
commit that makes its results count, the window of chunks dispatched per job, and the
committed chunks a download reads.

Every change is a conditional UPDATE whose matched rows decide who won. Lock order (on
PostgreSQL): a transaction that writes a job's chunks and may change the job locks the
job row first (`lock_job`), as `transition` does, so two of them never wait on each other
in a circle."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .job_types import (
    CHUNKS,
    JOBS,
    LIVE_CHUNK_STATES,
    ChunkClaim,
    ChunkLike,
    ChunkOutcome,
    CompleteResult,
    DoneChunk,
    dialect_insert,
    rowcount,
)
from .job_types import chunk_job_in as _job_in

# Rows per add_chunks call: the caller gives each batch its own transaction, which stays
# well inside Database.run's deadline (a 5 M-row file is 20 000 chunks: 20 calls).
CHUNK_BATCH = 1_000
RATE_ALPHA = 0.3  # weight of the newest commit in the rows/s moving average
c = CHUNKS.c


async def lock_job(session: AsyncSession, job_id: str) -> bool:
    """Locks the job's row until the transaction ends, so what it reads next stays true
    while it writes: False when the job is gone. Call it first in a transaction that
    reads before it writes. PostgreSQL: SELECT ... FOR UPDATE. SQLite: a write, which
    takes the database's one write lock (pysqlite begins the transaction only at the
    first write: reads before it would see no lock at all)."""
    if session.get_bind().dialect.name == "postgresql":
        found = await session.execute(
            select(JOBS.c.id).where(JOBS.c.id == job_id).with_for_update()
        )
        return found.first() is not None
    touched = await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(id=JOBS.c.id))
    return rowcount(touched) == 1


async def add_chunks(session: AsyncSession, job_id: str, plans: Sequence[ChunkLike]) -> None:
    """Inserts planned chunks as pending; a chunk already there is left as it is, so a
    re-run of planning (deterministic: the same plans) changes nothing."""
    if len(plans) > CHUNK_BATCH:
        raise ValueError(f"at most {CHUNK_BATCH} chunks per call, got {len(plans)}")
    if not plans:
        return
    rows = [
        {
            "job_id": job_id,
            "idx": p.idx,
            "file_idx": p.file_idx,
            "start_offset": p.start_offset,
            "end_offset": p.end_offset,
            "first_row": p.first_row,
            "rows": p.rows,
            "state": "pending",
            "attempts": 0,
        }
        for p in plans
    ]
    statement = dialect_insert(session)(CHUNKS).on_conflict_do_nothing(
        index_elements=["job_id", "idx"]
    )
    await session.execute(statement, rows)


async def claim_chunk(
    session: AsyncSession, job_id: str, idx: int, owner: str, now: float, lease_s: float
) -> ChunkClaim | None:
    """Takes the chunk's lease: it must be queued, or running under a lease that ended
    (its worker died), not deferred past `now`, and its job running. None: someone holds
    it, it is done or skipped, or the job is not running."""
    await lock_job(session, job_id)
    claimed = await session.execute(
        update(CHUNKS)
        .where(
            c.job_id == job_id,
            c.idx == idx,
            or_(c.state == "queued", and_(c.state == "running", c.lease_until < now)),
            or_(c.not_before.is_(None), c.not_before <= now),
            _job_in("running"),
        )
        .values(
            state="running", attempts=c.attempts + 1, lease_owner=owner, lease_until=now + lease_s
        )
        .returning(
            c.job_id,
            c.idx,
            c.file_idx,
            c.start_offset,
            c.end_offset,
            c.first_row,
            c.rows,
            c.attempts,
            c.lease_owner,
            c.lease_until,
        )
    )
    row = claimed.first()
    return None if row is None else ChunkClaim(**row._mapping)


async def renew_lease(
    session: AsyncSession, job_id: str, idx: int, owner: str, until: float
) -> bool:
    """False: the lease is no longer `owner`'s (it ended and another worker took it, or
    the chunk is done or skipped). The attempt may finish anyway: the commit decides."""
    renewed = await session.execute(
        update(CHUNKS)
        .where(c.job_id == job_id, c.idx == idx, c.state == "running", c.lease_owner == owner)
        .values(lease_until=until)
    )
    return rowcount(renewed) == 1


async def release_chunk(
    session: AsyncSession, job_id: str, idx: int, owner: str, not_before: float | None
) -> bool:
    """Gives `owner`'s lease back: the chunk is queued again, to be claimed from
    `not_before` on (None: at once). Left undispatched, so the reconciler sends it once
    `not_before` has passed. False: the lease was not `owner`'s any more."""
    await lock_job(session, job_id)
    released = await session.execute(
        update(CHUNKS)
        .where(c.job_id == job_id, c.idx == idx, c.state == "running", c.lease_owner == owner)
        .values(
            state="queued",
            lease_owner=None,
            lease_until=None,
            not_before=not_before,
            dispatched_at=None,
        )
    )
    return rowcount(released) == 1


async def skip_chunk(session: AsyncSession, job_id: str, idx: int) -> bool:
    """The chunk will not run (its job is cancelling or ended): skipped, unless done."""
    await lock_job(session, job_id)
    skipped = await session.execute(
        update(CHUNKS)
        .where(c.job_id == job_id, c.idx == idx, c.state.in_(("pending", *LIVE_CHUNK_STATES)))
        .values(state="skipped", lease_owner=None, lease_until=None)
    )
    return rowcount(skipped) == 1


async def live_chunks(session: AsyncSession, job_id: str, now: float) -> int:
    """Chunks of the job some worker still runs under a lease (a cancelling job ends once
    this is 0)."""
    found = await session.execute(
        select(func.count())
        .select_from(CHUNKS)
        .where(c.job_id == job_id, c.state == "running", c.lease_until >= now)
    )
    return int(found.scalar_one())


def _rate(previous: float | None, since: float | None, rows: int, now: float) -> float | None:
    """Moving average of rows/s: the rows this commit adds over the time since the job's
    previous commit (or its start), so chunks committed in parallel add up."""
    if since is None or now <= since:
        return previous
    instant = rows / (now - since)
    return instant if previous is None else previous + RATE_ALPHA * (instant - previous)


async def complete_chunk(
    session: AsyncSession, job_id: str, idx: int, outcome: ChunkOutcome, now: float
) -> CompleteResult:
    """The commit that makes one attempt's files the chunk's results: the chunk moves to
    done only if it is not done (nor skipped) yet, and only then do the job's counters,
    `seq` and rate move, in this same transaction. So a duplicate attempt, or one whose
    lease ran out and was re-run, counts at most once; `won` False tells it to delete
    its files."""
    if not await lock_job(session, job_id):  # the job first (lock order), an exact rate
        return CompleteResult(won=False)
    job = (
        await session.execute(
            select(JOBS.c.rate_rows_per_s, JOBS.c.last_commit_at, JOBS.c.started_at).where(
                JOBS.c.id == job_id
            )
        )
    ).one()
    done = await session.execute(
        update(CHUNKS)
        .where(c.job_id == job_id, c.idx == idx, c.state.in_(LIVE_CHUNK_STATES))
        .values(
            state="done",
            output_token=outcome.output_token,
            rows_ok=outcome.rows_ok,
            rows_failed=outcome.rows_failed,
            results_bytes=outcome.results_bytes,
            csv_bytes=outcome.csv_bytes,
            errors_bytes=outcome.errors_bytes,
            finished_at=now,
            lease_owner=None,
            lease_until=None,
        )
    )
    if rowcount(done) != 1:
        return CompleteResult(won=False)
    rows = outcome.rows_ok + outcome.rows_failed
    since = job.last_commit_at if job.last_commit_at is not None else job.started_at
    j = JOBS.c
    counted = await session.execute(
        update(JOBS)
        .where(j.id == job_id)
        .values(
            rows_done=j.rows_done + outcome.rows_ok,
            rows_failed=j.rows_failed + outcome.rows_failed,
            chunks_done=j.chunks_done + 1,
            seq=j.seq + 1,
            rate_rows_per_s=_rate(job.rate_rows_per_s, since, rows, now),
            last_commit_at=now,
            updated_at=now,
            waiting=None,  # it moves again
        )
        .returning(j.state, j.rows_done, j.rows_failed, j.chunks_done, j.chunks_total, j.seq)
    )
    return CompleteResult(won=True, **counted.one()._mapping)


async def next_to_dispatch(
    session: AsyncSession, job_id: str, window: int, now: float
) -> list[int]:
    """Moves the job's first pending chunks to queued, so that at most `window` are
    queued or running; returns their indexes (the caller dispatches them). Only for a
    running job: a cancelling one starts nothing new."""
    if not await lock_job(session, job_id):
        return []
    busy = await session.execute(
        select(func.count())
        .select_from(CHUNKS)
        .where(c.job_id == job_id, c.state.in_(LIVE_CHUNK_STATES))
    )
    free = window - int(busy.scalar_one())
    if free <= 0:
        return []
    pending = select(c.idx).where(c.job_id == job_id, c.state == "pending")
    picked = list((await session.execute(pending.order_by(c.idx).limit(free))).scalars())
    if not picked:
        return []
    queued = await session.execute(
        update(CHUNKS)
        .where(c.job_id == job_id, c.idx.in_(picked), c.state == "pending", _job_in("running"))
        .values(state="queued", dispatched_at=now)
        .returning(c.idx)
    )
    return sorted(queued.scalars())


async def done_chunks(session: AsyncSession, job_id: str) -> list[DoneChunk]:
    """The job's committed chunks in chunk order: its results, as SQL references them."""
    found = await session.execute(
        select(
            c.idx,
            c.first_row,
            c.rows,
            c.output_token,
            c.rows_ok,
            c.rows_failed,
            c.results_bytes,
            c.csv_bytes,
            c.errors_bytes,
        )
        .where(c.job_id == job_id, c.state == "done")
        .order_by(c.idx)
    )
    return [DoneChunk(**row._mapping) for row in found.all()]
