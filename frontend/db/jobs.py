"""Batch jobs in SQL, their system of record (design §1): the job-level queries here, the
chunk queries in job_chunks.py, limits and idempotency in job_limits.py, the
reconciler's finds and gauge counts in job_reconcile.py, the states and values in
job_types.py; this module re-exports them all, so callers import only it.

Each function takes the caller's session (`Database.run(operation, work)`), so that a
chunk commit, the job's counters, its usage rows and its next dispatches share one
transaction. A job's state changes only through `transition` (or planning's
queued → running), whose WHERE names the states it may leave."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import notifications
from .job_chunks import (
    CHUNK_BATCH,
    add_chunks,
    claim_chunk,
    complete_chunk,
    done_chunks,
    live_chunks,
    lock_job,
    next_to_dispatch,
    release_chunk,
    renew_lease,
    skip_chunk,
)
from .job_limits import (
    admit,
    bind_idempotency,
    claim_idempotency,
    drop_expired_idempotency,
    drop_idempotency,
    release_active,
    settle_rows,
)
from .job_reconcile import queued_chunks, stale_work, state_counts
from .job_types import (
    ACCOUNTS,
    CHUNK_STATES,
    CHUNKS,
    FILES,
    IDEMPOTENCY,
    JOB_STATES,
    JOBS,
    LIVE_CHUNK_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    Admission,
    ChunkClaim,
    ChunkLike,
    ChunkOutcome,
    ChunkState,
    CompleteResult,
    DoneChunk,
    IdemClaim,
    JobFileRow,
    JobRow,
    JobState,
    LimitsLike,
    Work,
    rowcount,
    utc_day,
)

__all__ = [
    "ACCOUNTS",
    "CHUNKS",
    "CHUNK_BATCH",
    "CHUNK_STATES",
    "DEFAULT_RETENTION_S",
    "FILES",
    "IDEMPOTENCY",
    "JOBS",
    "JOB_STATES",
    "LIVE_CHUNK_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Admission",
    "ChunkClaim",
    "ChunkLike",
    "ChunkOutcome",
    "ChunkState",
    "CompleteResult",
    "DoneChunk",
    "IdemClaim",
    "JobFileRow",
    "JobRow",
    "JobState",
    "LimitsLike",
    "Work",
    "add_chunks",
    "admit",
    "bind_idempotency",
    "claim_chunk",
    "claim_idempotency",
    "complete_chunk",
    "delete_job",
    "done_chunks",
    "drop_expired_idempotency",
    "drop_idempotency",
    "expired",
    "files",
    "finish_planning",
    "finish_stalled",
    "insert_job",
    "job",
    "live_chunks",
    "lock_job",
    "next_to_dispatch",
    "owned",
    "page",
    "queued_chunks",
    "release_active",
    "release_chunk",
    "renew_lease",
    "set_waiting",
    "settle_rows",
    "skip_chunk",
    "stale_work",
    "state_counts",
    "transition",
    "utc_day",
]

DEFAULT_RETENTION_S = 604_800.0  # jobs.retention_s's default; callers pass the setting
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(JobRow))
_FILE_FIELDS = tuple(f.name for f in dataclasses.fields(JobFileRow))
j = JOBS.c


def _job(row: Any) -> JobRow:
    return JobRow(**{name: row._mapping[name] for name in _JOB_FIELDS})


async def insert_job(session: AsyncSession, job: JobRow, files: Sequence[JobFileRow]) -> None:
    await session.execute(JOBS.insert().values({n: getattr(job, n) for n in _JOB_FIELDS}))
    if files:
        await session.execute(
            FILES.insert(),
            [{"job_id": job.id, **{n: getattr(f, n) for n in _FILE_FIELDS}} for f in files],
        )


async def job(session: AsyncSession, job_id: str) -> JobRow | None:
    row = (await session.execute(select(JOBS).where(j.id == job_id))).first()
    return None if row is None else _job(row)


async def owned(session: AsyncSession, job_id: str, owner: str | None) -> JobRow | None:
    """The job if `owner` owns it (None: anyone's, for admins). Another owner's job is
    None, exactly as a job that does not exist."""
    query = select(JOBS).where(j.id == job_id)
    if owner is not None:
        query = query.where(j.owner == owner)
    row = (await session.execute(query)).first()
    return None if row is None else _job(row)


async def files(session: AsyncSession, job_id: str) -> list[JobFileRow]:
    found = await session.execute(
        select(*(FILES.c[n] for n in _FILE_FIELDS))
        .where(FILES.c.job_id == job_id)
        .order_by(FILES.c.idx)
    )
    return [JobFileRow(**row._mapping) for row in found.all()]


async def page(
    session: AsyncSession,
    *,
    owner: str | None,
    states: Sequence[str] | None,
    model: str | None,
    after: tuple[float, str] | None,
    limit: int,
) -> list[JobRow]:
    """Newest first (created_at, then id), at most `limit`, those after the key
    `after` (the last row of the previous page): keyset paging, never an OFFSET, so a
    job submitted meanwhile neither repeats nor hides a row of the next page."""
    query = select(JOBS)
    if owner is not None:
        query = query.where(j.owner == owner)
    if states:
        query = query.where(j.state.in_(states))
    if model is not None:
        query = query.where(j.model == model)
    if after is not None:
        at, last_id = after
        query = query.where(or_(j.created_at < at, and_(j.created_at == at, j.id < last_id)))
    query = query.order_by(j.created_at.desc(), j.id.desc()).limit(limit)
    return [_job(row) for row in (await session.execute(query)).all()]


async def finish_planning(
    session: AsyncSession,
    job_id: str,
    rows_total: int,
    chunks_total: int,
    file_rows: Sequence[tuple[int, int]],
    now: float,
) -> bool:
    """Planning's end: the job is planned and running, and file i gets `file_rows[i]` =
    (first_row, rows). Only once: False when it was planned already (a duplicate planning
    message) or is no longer queued (cancelled meanwhile)."""
    planned = await session.execute(
        update(JOBS)
        .where(j.id == job_id, j.planned == false(), j.state == "queued")
        .values(
            planned=True,
            rows_total=rows_total,
            chunks_total=chunks_total,
            state="running",
            started_at=func.coalesce(j.started_at, now),
            seq=j.seq + 1,
            updated_at=now,
        )
    )
    if rowcount(planned) != 1:
        return False
    for idx, (first_row, rows) in enumerate(file_rows):
        await session.execute(
            update(FILES)
            .where(FILES.c.job_id == job_id, FILES.c.idx == idx)
            .values(first_row=first_row, rows=rows)
        )
    return True


async def transition(
    session: AsyncSession,
    job_id: str,
    to: str,
    now: float,
    *,
    error: dict[str, Any] | None = None,
    retention_s: float = DEFAULT_RETENTION_S,
) -> bool:
    """Moves the job to `to` if TRANSITIONS allows it from its current state (False
    otherwise: never out of a terminal state). Into a terminal state, in this same
    transaction: finished_at and expires_at (now + `retention_s`) are set, the account's
    active count is released and every chunk not done is skipped (a late commit of one
    then loses)."""
    if to not in TRANSITIONS:
        raise ValueError(f"unknown job state {to!r}")
    sources = [state for state, targets in TRANSITIONS.items() if to in targets]
    values: dict[str, Any] = {"state": to, "seq": j.seq + 1, "updated_at": now}
    if to == "running":
        values["started_at"] = func.coalesce(j.started_at, now)
    if error is not None:
        values["error"] = error
    terminal = to in TERMINAL_STATES
    if terminal:
        values |= {"finished_at": now, "expires_at": now + retention_s, "waiting": None}
    moved = await session.execute(
        update(JOBS).where(j.id == job_id, j.state.in_(sources)).values(values).returning(j.account)
    )
    row = moved.first()
    if row is None:
        return False
    if terminal:
        await release_active(session, row.account)
        await session.execute(
            update(CHUNKS)
            .where(CHUNKS.c.job_id == job_id, CHUNKS.c.state.in_(("pending", *LIVE_CHUNK_STATES)))
            .values(state="skipped", lease_owner=None, lease_until=None)
        )
        # The outbox, in this transaction: the event commits with the state or not at all.
        await notifications.enqueue_job_event(session, job_id, f"job.{to}", now)
    return True


async def set_waiting(
    session: AsyncSession, job_id: str, waiting: dict[str, Any] | None, now: float
) -> bool:
    """Why the job makes no progress now ({"reason", "until"}; None: it does), shown in
    its status; a commit clears it. Not on a finished job."""
    done = await session.execute(
        update(JOBS)
        .where(j.id == job_id, j.state.not_in(TERMINAL_STATES))
        .values(waiting=waiting, seq=j.seq + 1, updated_at=now)
    )
    return rowcount(done) == 1


async def finish_stalled(
    session: AsyncSession, now: float, limit: int, *, retention_s: float = DEFAULT_RETENTION_S
) -> list[tuple[str, str]]:
    """The reconciler's finishes, (job_id, new state) each: a cancelling job no worker
    runs a chunk of any more → cancelled; a running job whose every chunk is done (its
    last commit's transaction ended before the finish) → succeeded."""
    running_chunk = (
        select(CHUNKS.c.idx)
        .where(CHUNKS.c.job_id == j.id, CHUNKS.c.state == "running", CHUNKS.c.lease_until >= now)
        .exists()
    )
    stalled = or_(
        and_(j.state == "cancelling", ~running_chunk),
        and_(
            j.state == "running",
            j.planned == true(),
            j.chunks_total.is_not(None),
            j.chunks_done >= j.chunks_total,
        ),
    )
    found = await session.execute(
        select(j.id, j.state).where(stalled).order_by(j.updated_at).limit(limit)
    )
    finished = []
    for job_id, state in found.all():
        to = "cancelled" if state == "cancelling" else "succeeded"
        if await transition(session, job_id, to, now, retention_s=retention_s):
            finished.append((job_id, to))
    return finished


async def expired(session: AsyncSession, now: float, limit: int) -> list[str]:
    """Finished jobs past their retention, oldest first."""
    found = await session.execute(
        select(j.id).where(j.expires_at < now).order_by(j.expires_at).limit(limit)
    )
    return list(found.scalars())


async def delete_job(session: AsyncSession, job_id: str) -> bool:
    """Every row of the job: chunks, files, its idempotency keys, the job. A job deleted
    before it finished gives its active slot back. False: it was gone already."""
    gone = (
        await session.execute(delete(JOBS).where(j.id == job_id).returning(j.state, j.account))
    ).first()
    if gone is not None and gone.state not in TERMINAL_STATES:
        await release_active(session, gone.account)
    await session.execute(delete(CHUNKS).where(CHUNKS.c.job_id == job_id))
    await session.execute(delete(FILES).where(FILES.c.job_id == job_id))
    await session.execute(delete(IDEMPOTENCY).where(IDEMPOTENCY.c.job_id == job_id))
    return gone is not None
