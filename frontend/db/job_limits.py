"""Job limits and idempotency keys, exact without Redis (design §6).

Admission is one conditional UPDATE of the account's `job_accounts` row: it adds the job
only while the account is under both limits, so 100 concurrent submissions against a
limit of 3 admit exactly 3, on SQLite (one writer) as on PostgreSQL (the row lock), in
every worker and replica, and a Redis flush changes nothing. An Idempotency-Key is a
primary key: of concurrent twins, exactly one insert gets it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .job_types import (
    ACCOUNTS,
    IDEMPOTENCY,
    Admission,
    IdemClaim,
    LimitsLike,
    dialect_insert,
    rowcount,
)

a = ACCOUNTS.c
k = IDEMPOTENCY.c


def _rows_on(today: int) -> Any:
    """The account's rows reserved on `today` (a row last used on an earlier day: 0)."""
    return case((a.day == today, a.rows_day), else_=0)


async def admit(
    session: AsyncSession, account: str, rows: int, limits: LimitsLike, today: int
) -> Admission:
    """Counts one more active job and `rows` more rows on the UTC day `today` (see
    job_types.utc_day) if both stay within `limits`; a new day starts from 0 rows.
    Refused: nothing changes, and the answer says which limit and by how much."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    await session.execute(
        dialect_insert(session)(ACCOUNTS)
        .values(account=account, active=0, day=today, rows_day=0)
        .on_conflict_do_nothing(index_elements=["account"])
    )
    conditions = [a.account == account]
    if limits.concurrent is not None:
        conditions.append(a.active < limits.concurrent)
    if limits.rows_per_day is not None:
        conditions.append(_rows_on(today) + rows <= limits.rows_per_day)
    admitted = await session.execute(
        update(ACCOUNTS)
        .where(*conditions)
        # SET reads the row as it was: rows_day's CASE sees the old day.
        .values(active=a.active + 1, rows_day=_rows_on(today) + rows, day=today)
        .returning(a.active, a.rows_day)
    )
    row = admitted.first()
    if row is not None:
        return Admission(True, row.active, row.rows_day, today, rows)
    held = (
        await session.execute(
            select(a.active, _rows_on(today).label("rows_today")).where(a.account == account)
        )
    ).one()
    active, rows_today = int(held.active), int(held.rows_today)
    if limits.concurrent is not None and active >= limits.concurrent:
        return Admission(
            False, active, rows_today, today, rows, "concurrent_jobs", active, limits.concurrent
        )
    return Admission(
        False, active, rows_today, today, rows, "job_rows_per_day", rows_today, limits.rows_per_day
    )


async def settle_rows(session: AsyncSession, account: str, day: int, delta: int) -> None:
    """Corrects a reservation made on `day` by `delta` rows (planning knows the real
    count), never below 0. A reservation of a day that has ended is left alone: that
    day's count no longer limits anything."""
    settled = a.rows_day + delta
    await session.execute(
        update(ACCOUNTS)
        .where(a.account == account, a.day == day)
        .values(rows_day=case((settled < 0, 0), else_=settled))
    )


async def release_active(session: AsyncSession, account: str) -> None:
    """One job of the account ended (never below 0)."""
    await session.execute(
        update(ACCOUNTS).where(a.account == account, a.active > 0).values(active=a.active - 1)
    )


def _classify(row: Any, request_hash: str | None) -> IdemClaim:
    if row.state != "done":
        return IdemClaim("in_progress", row.job_id, row.request_hash, row.created_at)
    if request_hash is None:
        return IdemClaim("done", row.job_id, row.request_hash, row.created_at)
    if row.request_hash == request_hash:
        return IdemClaim("replay", row.job_id, row.request_hash, row.created_at)
    return IdemClaim("reused", row.job_id, row.request_hash, row.created_at)


async def claim_idempotency(
    session: AsyncSession,
    owner: str,
    key: str,
    request_hash: str | None,
    now: float,
    ttl_s: float,
    stale_s: float,
) -> IdemClaim:
    """Takes `owner`'s `key` for this request (see IdemClaim for the answers). A row
    that expired, or stayed in_progress longer than `stale_s` (its submitter died), is
    taken over by a conditional UPDATE, so that too has one winner. `request_hash` None:
    not known yet (a multipart body), bound later."""
    claim = {
        "request_hash": request_hash,
        "state": "in_progress",
        "job_id": None,
        "created_at": now,
        "expires_at": now + ttl_s,
    }
    this = and_(k.owner == owner, k.key == key)
    abandoned = or_(
        k.expires_at < now, and_(k.state == "in_progress", k.created_at < now - stale_s)
    )
    for _ in range(2):  # once more if the row vanished between the insert and the read
        inserted = await session.execute(
            dialect_insert(session)(IDEMPOTENCY)
            .values(owner=owner, key=key, **claim)
            .on_conflict_do_nothing(index_elements=["owner", "key"])
            .returning(k.owner)
        )
        if inserted.first() is not None:
            return IdemClaim("claimed", None, request_hash, now)
        taken = await session.execute(update(IDEMPOTENCY).where(this, abandoned).values(claim))
        if rowcount(taken) == 1:
            return IdemClaim("claimed", None, request_hash, now)
        row = (await session.execute(select(IDEMPOTENCY).where(this))).first()
        if row is not None:
            return _classify(row, request_hash)
    return IdemClaim("in_progress")  # another request keeps taking and dropping it


def _mine(owner: str, key: str, claimed_at: float | None) -> Any:
    """The key while it is still in progress (and, given `claimed_at`, still this
    request's claim: not one that took it over since)."""
    condition = and_(k.owner == owner, k.key == key, k.state == "in_progress")
    return condition if claimed_at is None else and_(condition, k.created_at == claimed_at)


async def bind_idempotency(
    session: AsyncSession,
    owner: str,
    key: str,
    job_id: str,
    request_hash: str,
    *,
    claimed_at: float | None = None,
) -> bool:
    """The submission made `job_id`: the key is done, its replays answer that job."""
    bound = await session.execute(
        update(IDEMPOTENCY)
        .where(_mine(owner, key, claimed_at))
        .values(state="done", job_id=job_id, request_hash=request_hash)
    )
    return rowcount(bound) == 1


async def drop_idempotency(
    session: AsyncSession, owner: str, key: str, *, claimed_at: float | None = None
) -> bool:
    """The submission failed: the key is free again (a done key is never dropped)."""
    dropped = await session.execute(delete(IDEMPOTENCY).where(_mine(owner, key, claimed_at)))
    return rowcount(dropped) == 1


async def drop_expired_idempotency(session: AsyncSession, now: float) -> int:
    """The retention sweep: keys past their TTL."""
    dropped = await session.execute(delete(IDEMPOTENCY).where(k.expires_at < now))
    return rowcount(dropped)
