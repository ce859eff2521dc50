"""The routing tables: one row per model an admin has routed (absent: the routing file's
defaults), and the history of every change to them.

Each function works inside the caller's transaction (`Database.run`), so a change, its
history row and its audit entry are committed together or not at all."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import RoutingHistoryRow, RoutingRow


async def load(session: AsyncSession) -> dict[str, Any]:
    """Every stored routing, by model. Values are the stored JSON as it is (validated by
    the router against what is served now, which may have changed since)."""
    rows = await session.execute(select(RoutingRow.model, RoutingRow.config))
    return {model: config for model, config in rows.all()}


async def save(
    session: AsyncSession,
    model: str,
    config: dict[str, Any] | None,
    *,
    actor: str,
    request_id: str | None,
) -> RoutingHistoryRow:
    """Store `model`'s routing (None: remove it, back to the file's defaults) and add its
    history row (flushed: its id is set). The row is read FOR UPDATE (PostgreSQL), so two
    admins changing one model at once are ordered and each history row names the routing
    it really replaced; when neither saw a row, the second insert fails on the primary
    key (IntegrityError) and the caller retries it, then seeing the first one's row."""
    now = time.time()
    row = (
        await session.execute(select(RoutingRow).where(RoutingRow.model == model).with_for_update())
    ).scalar_one_or_none()
    previous = dict(row.config) if row is not None else None
    if config is None:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(RoutingRow(model=model, config=config, updated_at=now, updated_by=actor))
    else:
        row.config, row.updated_at, row.updated_by = config, now, actor
    entry = RoutingHistoryRow(
        model=model,
        changed_at=now,
        actor=actor,
        request_id=request_id,
        previous=previous,
        current=config,
    )
    session.add(entry)
    await session.flush()
    return entry


async def history(
    session: AsyncSession, model: str, *, limit: int, before: int | None = None
) -> list[RoutingHistoryRow]:
    """`model`'s changes, newest first: at most `limit`, only those older than the entry
    `before` (an id) when given."""
    query = select(RoutingHistoryRow).where(RoutingHistoryRow.model == model)
    if before is not None:
        query = query.where(RoutingHistoryRow.id < before)
    query = query.order_by(RoutingHistoryRow.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars().all())
