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
    JOB_TABLES,
    NOTIFY_TABLES,
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
            assert await table_names(db) == (
                ACCOUNT_TABLES | ROUTING_USAGE_TABLES | JOB_TABLES | NOTIFY_TABLES
            )
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


def test_head_is_the_notifications_revision():
    assert migrate.head() == "0004"


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
    async def scenario(revision: str):
        db = engine(sqlite_url(tmp_path))
        try:
            await migrate.upgrade(db, revision)
            await migrate.require_head(db)
        finally:
            await db.dispose()

    with pytest.raises(migrate.NotMigrated, match="revision 0001, this version needs 0004"):
        asyncio.run(scenario("0001"))
    with pytest.raises(migrate.NotMigrated, match="revision 0002, this version needs 0004"):
        asyncio.run(scenario("0002"))


def test_each_revision_makes_its_tables_and_its_downgrade_drops_them(tmp_path):
    async def scenario() -> list[set[str]]:
        db = engine(sqlite_url(tmp_path))
        seen = []
        try:
            for revision in ("0001", "0002", "0003", "0004"):
                await migrate.upgrade(db, revision)
                seen.append(await table_names(db))
            await migrate.downgrade(db, "0002")
            seen.append(await table_names(db))
            return seen
        finally:
            await db.dispose()

    accounts, routing, jobs, notify, down = asyncio.run(scenario())
    assert accounts == ACCOUNT_TABLES
    assert routing == ACCOUNT_TABLES | ROUTING_USAGE_TABLES
    assert jobs == routing | JOB_TABLES
    assert notify == jobs | NOTIFY_TABLES
    assert down == routing


def test_in_memory_transactions_take_turns_so_a_rollback_never_undoes_another():
    """In memory every session shares one SQLite connection, which holds one transaction:
    without turns, a session that fails and rolls back while another has inserted would
    undo that insert (seen as a key created, then unknown on its first use)."""
    import asyncio

    from sqlalchemy import select

    from frontend.db.database import MEMORY_URL, Database
    from frontend.db.migrate import create_all
    from frontend.db.tables import AuditRow
    from frontend.observability.metrics import Metrics
    from frontend.settings import DatabaseSettings

    async def run() -> list[str]:
        db = Database(MEMORY_URL, DatabaseSettings(), Metrics())
        await create_all(db.engine)

        async def failing(session) -> None:
            session.add(AuditRow(at=1.0, actor="a", action="doomed", target="t", details={}))
            await session.flush()
            await asyncio.sleep(0.05)  # the other transaction runs meanwhile (if allowed)
            raise RuntimeError("this one fails and rolls back")

        async def inserting(session) -> None:
            await asyncio.sleep(0.01)  # 10 ms: begins once the failing one has inserted
            session.add(AuditRow(at=2.0, actor="b", action="kept", target="t", details={}))

        outcomes = await asyncio.gather(
            db.run("fail", failing), db.run("insert", inserting), return_exceptions=True
        )
        assert isinstance(outcomes[0], RuntimeError) and outcomes[1] is None
        rows = await db.run("read", lambda s: s.execute(select(AuditRow.action)))
        actions = list(rows.scalars())
        await db.close()
        return actions

    assert asyncio.run(run()) == ["kept"]
