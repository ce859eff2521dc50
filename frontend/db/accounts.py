"""Queries on users and API keys. Every function takes the caller's session, so that a
change and its audit entry share one transaction (`Database.run`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import ApiKeyRow, UserRow

MAX_LISTED = 10_000  # a listing never loads more rows than this


async def user(session: AsyncSession, user_id: str) -> UserRow | None:
    return await session.get(UserRow, user_id)


async def user_by_name(session: AsyncSession, username: str) -> UserRow | None:
    found = await session.execute(select(UserRow).where(UserRow.username_key == username.lower()))
    return found.scalar_one_or_none()


async def users(session: AsyncSession) -> Sequence[UserRow]:
    found = await session.execute(select(UserRow).order_by(UserRow.created_at).limit(MAX_LISTED))
    return found.scalars().all()


async def key(session: AsyncSession, key_id: str) -> ApiKeyRow | None:
    return await session.get(ApiKeyRow, key_id)


async def keys(session: AsyncSession, owner: str | None) -> Sequence[ApiKeyRow]:
    """All keys (owner None), or those `owner` owns."""
    query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id).limit(MAX_LISTED)
    if owner is not None:
        query = query.where(ApiKeyRow.owner == owner)
    found = await session.execute(query)
    return found.scalars().all()


async def key_ids_owned_by(session: AsyncSession, owner: str) -> list[str]:
    found = await session.execute(select(ApiKeyRow.id).where(ApiKeyRow.owner == owner))
    return list(found.scalars().all())


async def touch_keys(session: AsyncSession, used: dict[str, float]) -> None:
    """Last-used times, written behind the hot path (never moves one backwards)."""
    for key_id, at in sorted(used.items()):
        await session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id)
            .where((ApiKeyRow.last_used_at.is_(None)) | (ApiKeyRow.last_used_at < at))
            .values(last_used_at=at)
        )


def changes(row: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Set `values` on `row`; returns {field: [before, after]} for what changed."""
    changed = {}
    for name, value in values.items():
        before = getattr(row, name)
        if before != value:
            changed[name] = [before, value]
            setattr(row, name, value)
    return changed
