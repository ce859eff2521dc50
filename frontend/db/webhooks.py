"""Queries on webhooks (their deliveries are in notifications.py). Every read names the
owner, so another owner's webhook is None exactly like one that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .job_types import rowcount
from .notifications import DELIVERIES
from .tables import WebhookRecord

W = WebhookRecord


async def count(session: AsyncSession, owner: str) -> int:
    found = await session.execute(select(func.count()).where(W.owner == owner))
    return int(found.scalar_one())


async def insert(session: AsyncSession, record: WebhookRecord) -> None:
    session.add(record)
    await session.flush()


async def owned(session: AsyncSession, webhook_id: str, owner: str | None) -> WebhookRecord | None:
    """The webhook if `owner` owns it (None: anyone's, for admins)."""
    query = select(W).where(W.id == webhook_id)
    if owner is not None:
        query = query.where(W.owner == owner)
    return (await session.execute(query)).scalar_one_or_none()


async def page(
    session: AsyncSession, owner: str, after: tuple[float, str] | None, limit: int
) -> Sequence[WebhookRecord]:
    """Oldest first (created_at, then id), keyset paged."""
    query = select(W).where(W.owner == owner)
    if after is not None:
        at, last = after
        query = query.where(or_(W.created_at > at, and_(W.created_at == at, W.id > last)))
    query = query.order_by(W.created_at, W.id).limit(limit)
    return (await session.execute(query)).scalars().all()


async def change(
    session: AsyncSession, webhook_id: str, owner: str, values: dict[str, Any]
) -> WebhookRecord | None:
    done = await session.execute(
        update(W).where(W.id == webhook_id, W.owner == owner).values(values)
    )
    if rowcount(done) != 1:
        return None
    session.expire_all()  # the identity map may hold the row as it was
    return await owned(session, webhook_id, owner)


async def remove(session: AsyncSession, webhook_id: str, owner: str, now: float) -> bool:
    """The webhook gone; its pending deliveries end (failed: "the webhook was deleted"),
    its delivery log is kept until the outbox's retention."""
    gone = await session.execute(delete(W).where(W.id == webhook_id, W.owner == owner))
    if rowcount(gone) != 1:
        return False
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.webhook_id == webhook_id, DELIVERIES.c.state == "pending")
        .values(state="failed", last_error="the webhook was deleted", finished_at=now)
    )
    return True
