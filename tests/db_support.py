"""Helpers shared by the database tests: an engine for a URL, the tables it holds, and
what differs between its schema and the code's (`frontend.db.tables`)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from frontend.db.database import engine_for
from frontend.db.tables import Base
from frontend.settings import DatabaseSettings

# Every table the migrations make, by revision (alembic_version is Alembic's own).
ACCOUNT_TABLES = {"users", "api_keys", "audit_log"}
ROUTING_USAGE_TABLES = {"routing", "routing_history", "usage_ledger"}
JOB_TABLES = {"jobs", "job_files", "job_chunks", "job_accounts", "idempotency_keys"}
NOTIFY_TABLES = {
    "webhooks",
    "notification_events",
    "notification_deliveries",
    "notification_attempts",
}


def engine(url: str) -> AsyncEngine:
    return engine_for(url, DatabaseSettings())


async def table_names(db: AsyncEngine) -> set[str]:
    async with db.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names) - {"alembic_version"}


async def schema_differences(db: AsyncEngine, metadata: MetaData | None = None) -> list[Any]:
    """Alembic's autogenerate comparison (tables, columns, types, nullability, indexes,
    unique constraints) of the database against the ORM's metadata (or `metadata`): []
    when they agree."""

    def compare(sync: Any) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, metadata or Base.metadata))

    async with db.connect() as connection:
        return await connection.run_sync(compare)


def migrated_file(path: Any) -> str:
    """A SQLite file migrated to head (what `db upgrade` leaves): for apps started as prod,
    which never migrate by themselves. Returns its URL."""
    import asyncio

    from frontend.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{path}"

    async def run() -> None:
        db = engine(url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    return url
