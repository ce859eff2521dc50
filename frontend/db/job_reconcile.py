"""The reconciler's queries: work whose dispatch was lost (a broker flushed, a process
killed) found again from SQL, and the counts behind the SQL-derived gauges.

A dispatch is only a hint (design §0): each find marks what it returns as dispatched
with a conditional UPDATE, so two reconcilers in one pass never both send an item, and
a duplicate that slips through anyway is a no-op at the claim."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .job_types import CHUNKS, JOB_STATES, JOBS, Work
from .job_types import chunk_job_in as _job_in

c = CHUNKS.c


async def _take(
    session: AsyncSession, condition: Any, values: dict[str, Any], limit: int
) -> list[Work]:
    """Chunks matching `condition` (at most `limit`), each updated with `values` under
    the same condition: two reconcilers in one pass never both take a chunk."""
    found = await session.execute(
        select(c.job_id, c.idx).where(condition).order_by(c.job_id, c.idx).limit(limit)
    )
    by_job: dict[str, list[int]] = {}
    for job_id, idx in found.all():
        by_job.setdefault(job_id, []).append(idx)
    taken: list[Work] = []
    for job_id, idxs in by_job.items():
        result = await session.execute(
            update(CHUNKS)
            .where(c.job_id == job_id, c.idx.in_(idxs), condition)
            .values(**values)
            .returning(c.idx)
        )
        taken.extend(Work("chunk", job_id, idx) for idx in sorted(result.scalars()))
    return taken


async def stale_work(
    session: AsyncSession, now: float, redispatch_s: float, limit: int
) -> list[Work]:
    """What the reconciler sends again (at most `limit` of each kind), each marked as
    dispatched now: (a) queued jobs whose planning was never dispatched, or not for
    `redispatch_s`; (b) queued chunks of running jobs likewise, once their `not_before`
    has passed; (c) running chunks of running jobs whose lease ended, queued again.
    `redispatch_s` 0 takes every one (an executor starting after its process died)."""
    j = JOBS.c
    cutoff = now - redispatch_s
    unplanned = and_(
        j.state == "queued",
        j.planned == false(),
        or_(j.plan_dispatched_at.is_(None), j.plan_dispatched_at < cutoff),
    )
    candidates = select(j.id).where(unplanned).order_by(j.created_at, j.id).limit(limit)
    plan_ids = list((await session.execute(candidates)).scalars())
    work: list[Work] = []
    if plan_ids:
        planned = await session.execute(
            update(JOBS)
            .where(j.id.in_(plan_ids), unplanned)
            .values(plan_dispatched_at=now)
            .returning(j.id, j.created_at)
        )
        ordered = sorted(planned.all(), key=lambda row: (row.created_at, row.id))
        work += [Work("plan", row.id) for row in ordered]
    undispatched = and_(
        c.state == "queued",
        or_(c.dispatched_at.is_(None), c.dispatched_at < cutoff),
        or_(c.not_before.is_(None), c.not_before <= now),
        _job_in("running"),
    )
    work += await _take(session, undispatched, {"dispatched_at": now}, limit)
    expired = and_(c.state == "running", c.lease_until < now, _job_in("running"))
    requeued = {"state": "queued", "lease_owner": None, "lease_until": None, "dispatched_at": now}
    work += await _take(session, expired, requeued, limit)
    return work


async def queued_chunks(session: AsyncSession) -> int:
    """Chunks waiting for a worker, over every job (the SQL queue-depth gauge)."""
    found = await session.execute(
        select(func.count()).select_from(CHUNKS).where(c.state == "queued")
    )
    return int(found.scalar_one())


async def state_counts(session: AsyncSession) -> dict[str, int]:
    """Jobs per state, every state present (the jobs gauge)."""
    state = JOBS.c.state
    found = await session.execute(select(state, func.count()).group_by(state))
    counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
    counts.update({state: int(n) for state, n in found.all()})
    return counts
