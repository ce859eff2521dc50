"""A tier's job limits (design §6 "Limits"): input rows admitted per UTC day and jobs
queued or running at once, per account.

The exact check is `db.jobs.admit`, one conditional UPDATE in the submission's own
transaction (exact across workers and replicas, durable across a Redis flush). The
precheck here reads the same row before any file byte is stored, so that an account at
its limit is refused before it uploads 500 MB; it can let through what admission then
refuses (a race), never the other way round. A refusal is a 429 with the rate-limit
headers of a day window (`headers_for`) and a Retry-After: the next UTC midnight for
rows, `jobs.busy_retry_after_s` for concurrency."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..auth.principal import Principal
from ..db import jobs
from ..db.database import Database
from ..db.jobs import Admission
from ..errors import JobLimitExceeded
from ..ratelimit.limiter import WindowState, headers_for
from ..ratelimit.policy import WindowSpec
from ..settings import Tier

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class JobLimits:
    rows_per_day: int | None
    concurrent: int | None

    @property
    def unlimited(self) -> bool:
        return self.rows_per_day is None and self.concurrent is None


def limits_for(principal: Principal, tiers: Mapping[str, Tier]) -> JobLimits:
    """The principal's tier's job limits (a tier not configured: none)."""
    tier = tiers.get(principal.tier)
    if tier is None:
        return JobLimits(None, None)
    return JobLimits(tier.job_rows_per_day, tier.max_concurrent_jobs)


def seconds_to_midnight(now: float) -> int:
    """Whole seconds (at least 1) to the next UTC midnight, when rows/day starts over."""
    return max(1, math.ceil(jobs.utc_day(now) + DAY_S - now))


def _headers(limits: JobLimits, rows_today: int, tier: str, now: float) -> dict[str, str]:
    if limits.rows_per_day is None:
        return {}
    spec = WindowSpec(f"{tier}.job_rows.day", limits.rows_per_day, DAY_S, "job rows per day")
    remaining = max(0, limits.rows_per_day - rows_today)
    return headers_for([WindowState(spec, rows_today, remaining, seconds_to_midnight(now))])


def refusal(
    admission: Admission, limits: JobLimits, tier: str, now: float, busy_retry_after_s: int
) -> JobLimitExceeded:
    """The 429 for a refused admission, naming the limit, its value, what is used and
    what was requested."""
    details = {
        "limit": admission.limit,
        "used": admission.used,
        "limit_value": admission.limit_value,
        "requested": admission.requested,
    }
    headers = _headers(limits, admission.rows_day, tier, now)
    if admission.limit == "concurrent_jobs":
        message = (
            f"job limit exceeded: {admission.used} of {admission.limit_value} concurrent "
            "jobs are queued or running; retry when one ends"
        )
        return JobLimitExceeded(message, busy_retry_after_s, headers, details=details)
    cap = admission.limit_value or 0
    if admission.requested > cap:
        message = (
            f"job limit exceeded: the job has about {admission.requested} rows, more than "
            f"the {cap} rows a day this tier admits; split it into smaller jobs"
        )
    else:
        message = (
            f"job limit exceeded: {admission.used} of {cap} rows admitted today (UTC); "
            f"this job needs {admission.requested} more"
        )
    return JobLimitExceeded(message, seconds_to_midnight(now), headers, details=details)


async def _held(session: AsyncSession, account: str, today: int) -> tuple[int, int]:
    a = jobs.ACCOUNTS.c
    found = (
        await session.execute(
            select(a.active, case((a.day == today, a.rows_day), else_=0)).where(
                a.account == account
            )
        )
    ).first()
    return (0, 0) if found is None else (int(found[0]), int(found[1]))


async def precheck(
    database: Database,
    principal: Principal,
    limits: JobLimits,
    rows_hint: int,
    *,
    now: float,
    busy_retry_after_s: int,
) -> None:
    """Raises the refusal `admit` would give now for a job of `rows_hint` rows (a read
    only: nothing is reserved)."""
    if limits.unlimited:
        return
    today = jobs.utc_day(now)
    active, rows_today = await database.run(
        "jobs.limits_precheck", lambda s: _held(s, principal.account, today)
    )
    admission: Admission | None = None
    if limits.concurrent is not None and active >= limits.concurrent:
        admission = Admission(
            False,
            active,
            rows_today,
            today,
            rows_hint,
            "concurrent_jobs",
            active,
            limits.concurrent,
        )
    elif limits.rows_per_day is not None and rows_today + rows_hint > limits.rows_per_day:
        admission = Admission(
            False,
            active,
            rows_today,
            today,
            rows_hint,
            "job_rows_per_day",
            rows_today,
            limits.rows_per_day,
        )
    if admission is not None:
        raise refusal(admission, limits, principal.tier, now, busy_retry_after_s)
