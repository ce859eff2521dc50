"""Alembic, driven from code: `python -m frontend db upgrade|downgrade|current|check`,
and `serve`'s start (migrates outside prod; in prod refuses an unmigrated database).

The migrations run on a connection of the app's own async engine (`run_sync`), so the
same URL, driver and timeouts apply; no second configuration file to keep in step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import Base

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_HINT = "python -m frontend db upgrade"


class NotMigrated(RuntimeError):
    """The database's schema is not the code's (prod never migrates by itself)."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def _with_connection(connection: Any, action: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_with_connection, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_with_connection, "downgrade", revision)


async def current(engine: AsyncEngine) -> str | None:
    def read(connection: Any) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def require_head(engine: AsyncEngine) -> None:
    at = await current(engine)
    if at != head():
        state = "is empty" if at is None else f"is at revision {at}"
        raise NotMigrated(
            f"the database {state}, this version needs {head()}: run `{UPGRADE_HINT}` "
            "(with the same INFERGATE_DATABASE__URL) before starting"
        )


async def create_all(engine: AsyncEngine) -> None:
    """The in-memory database of an app built without `serve` (tests, embedding): the
    same tables, made directly (the schema test holds them equal to the migrations)."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
