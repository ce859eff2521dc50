"""The tables in code and the Alembic migrations describe one schema (on SQLite here; the
integration tests hold the same on PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import MetaData

from frontend.db import migrate
from frontend.db.tables import Base
from tests.db_support import (
    ACCOUNT_TABLES,
    ROUTING_USAGE_TABLES,
    engine,
    schema_differences,
    table_names,
)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"


def test_the_migrations_make_exactly_the_tables_in_code(tmp_path):
    async def scenario():
        db = engine(sqlite_url(tmp_path))
        try:
            await migrate.upgrade(db)
            assert await migrate.current(db) == migrate.head()
            assert await table_names(db) == ACCOUNT_TABLES | ROUTING_USAGE_TABLES
            return await schema_differences(db)
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == []


def test_a_table_changed_in_code_only_is_a_difference(tmp_path):
    """The comparison can fail: a column the migrations lack is reported."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["users"].append_column(sa.Column("nickname", sa.String(32), nullable=True))

    async def scenario():
        db = engine(sqlite_url(tmp_path))
        try:
            await migrate.upgrade(db)
            return await schema_differences(db, changed)
        finally:
            await db.dispose()

    differences = asyncio.run(scenario())
    assert [d[0] for d in differences] == ["add_column"]
    assert differences[0][3].name == "nickname"


def test_head_is_the_routing_and_usage_revision():
    assert migrate.head() == "0002"


def test_an_empty_database_is_refused_naming_the_upgrade_command(tmp_path):
    async def scenario():
        db = engine(sqlite_url(tmp_path))
        try:
            assert await migrate.current(db) is None
            await migrate.require_head(db)
        finally:
            await db.dispose()

    with pytest.raises(migrate.NotMigrated, match="python -m frontend db upgrade") as caught:
        asyncio.run(scenario())
    assert "the database is empty" in str(caught.value)


def test_a_database_one_revision_behind_is_refused_naming_both(tmp_path):
    async def scenario():
        db = engine(sqlite_url(tmp_path))
        try:
            await migrate.upgrade(db, "0001")
            assert await table_names(db) == ACCOUNT_TABLES
            await migrate.require_head(db)
        finally:
            await db.dispose()

    with pytest.raises(migrate.NotMigrated, match="revision 0001, this version needs 0002"):
        asyncio.run(scenario())
