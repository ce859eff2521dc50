"""The audit log: one row per admin action (who, when, what, on what, which request).

`add(session, ...)` writes the entry inside the caller's transaction, so an action and
its entry are committed together or not at all; `record(...)` is its own transaction;
`page(...)` reads it back, newest first, a bounded page at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .database import Database
from .tables import AuditRow


def add(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditRow(
            at=time.time(),
            actor=actor,
            action=action,
            target=target,
            request_id=request_id,
            details=details or {},
        )
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to read: each field given must match (`action`, `actor`, `target`
    exactly); `since` is inclusive and `until` exclusive (epoch seconds)."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        request_id: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        async def write(session: AsyncSession) -> None:
            add(
                session,
                actor=actor,
                action=action,
                target=target,
                request_id=request_id,
                details=details,
            )

        await self._db.run("audit", write)

    async def page(
        self, where: AuditFilter, *, limit: int, before: int | None = None
    ) -> list[AuditRow]:
        """Entries matching `where`, newest first (by id: insertion order, which two
        workers' clocks cannot reorder): at most `limit`, only those older than the entry
        `before` (an id) when given. The caller bounds `limit`."""
        query = select(AuditRow)
        if where.action is not None:
            query = query.where(AuditRow.action == where.action)
        if where.actor is not None:
            query = query.where(AuditRow.actor == where.actor)
        if where.target is not None:
            query = query.where(AuditRow.target == where.target)
        if where.since is not None:
            query = query.where(AuditRow.at >= where.since)
        if where.until is not None:
            query = query.where(AuditRow.at < where.until)
        if before is not None:
            query = query.where(AuditRow.id < before)
        query = query.order_by(AuditRow.id.desc()).limit(limit)

        async def read(session: AsyncSession) -> list[AuditRow]:
            return list((await session.execute(query)).scalars().all())

        return await self._db.run("audit.page", read)
