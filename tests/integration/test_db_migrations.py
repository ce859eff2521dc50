"""The migrations on both engines (a fresh SQLite file, a fresh database on a private
PostgreSQL): from empty to head, and a populated database down to 0001 and back, with
the account rows kept and the schema equal to the code's at every head."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from frontend.db import migrate
from frontend.db.tables import (
    ApiKeyRow,
    AuditRow,
    RoutingHistoryRow,
    RoutingRow,
    UsageRow,
    UserRow,
)
from tests.db_support import (
    ACCOUNT_TABLES,
    ROUTING_USAGE_TABLES,
    engine,
    schema_differences,
    table_names,
)

pytestmark = pytest.mark.integration
ALL_TABLES = ACCOUNT_TABLES | ROUTING_USAGE_TABLES


def user(n: int) -> UserRow:
    return UserRow(
        id=f"u{n:031d}",
        username=f"User{n}",
        username_key=f"user{n}",
        role="user",
        tier="free",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        disabled=False,
        created_at=1_700_000_000.0 + n,
        updated_at=1_700_000_000.0 + n,
    )


def key(n: int) -> ApiKeyRow:
    return ApiKeyRow(
        id=f"{n:016x}",
        name=f"key {n}",
        owner=f"user:u{n:031d}",
        role="user",
        tier="free",
        created_at=1_700_000_100.0 + n,
        created_by="bootstrap",
        digest="d" * 64,
        scopes={"models": ["intent"], "routes": None},
        labels={"team": "search"},
    )


async def populate(db: AsyncEngine) -> None:
    async with AsyncSession(db) as session, session.begin():
        session.add_all([user(n) for n in range(3)] + [key(n) for n in range(3)])
        session.add(
            AuditRow(at=1.0, actor="bootstrap", action="user.create", target="u", details={})
        )
        session.add(
            RoutingRow(model="intent", config={"default": "2"}, updated_at=2.0, updated_by="admin")
        )
        session.add(
            RoutingHistoryRow(
                model="intent",
                changed_at=2.0,
                actor="admin",
                previous=None,
                current={"default": "2"},
            )
        )
        session.add(
            UsageRow(
                subject="key:1",
                model="intent",
                version="2",
                minute=1_700_000_040,
                account="user:1",
                requests=5,
                items=7,
                prompt_tokens=0,
                completion_tokens=0,
                cache_hits=1,
                errors=0,
            )
        )


async def count(db: AsyncEngine, row: type) -> int:
    async with AsyncSession(db) as session:
        return int(await session.scalar(select(func.count()).select_from(row)) or 0)


async def account_rows(db: AsyncEngine) -> tuple[list[tuple], list[tuple]]:
    async with AsyncSession(db) as session:
        users = (await session.execute(select(UserRow.id, UserRow.username_key))).all()
        keys = (
            await session.execute(select(ApiKeyRow.id, ApiKeyRow.scopes, ApiKeyRow.labels))
        ).all()
    return sorted(map(tuple, users)), sorted(map(tuple, keys), key=lambda k: k[0])


def run(database_url: str, scenario) -> None:
    async def wrapped() -> None:
        db = engine(database_url)
        try:
            await scenario(db)
        finally:
            await db.dispose()

    asyncio.run(wrapped())


def test_upgrade_from_empty_makes_the_schema_in_code(database_url):
    async def scenario(db: AsyncEngine) -> None:
        assert await migrate.current(db) is None
        assert await table_names(db) == set()
        await migrate.upgrade(db)
        assert await migrate.current(db) == migrate.head() == "0002"
        assert await table_names(db) == ALL_TABLES
        assert await schema_differences(db) == []
        await migrate.require_head(db)  # passes now
        await migrate.upgrade(db)  # at head already: nothing to do
        assert await migrate.current(db) == "0002"

    run(database_url, scenario)


def test_a_populated_database_goes_down_to_0001_and_back_keeping_its_accounts(database_url):
    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        await populate(db)
        accounts = await account_rows(db)
        assert len(accounts[0]) == len(accounts[1]) == 3

        await migrate.downgrade(db, "0001")
        assert await migrate.current(db) == "0001"
        assert await table_names(db) == ACCOUNT_TABLES
        assert await account_rows(db) == accounts
        assert await count(db, AuditRow) == 1
        with pytest.raises(migrate.NotMigrated, match="revision 0001"):
            await migrate.require_head(db)

        await migrate.upgrade(db)
        assert await migrate.current(db) == "0002"
        assert await schema_differences(db) == []
        assert await account_rows(db) == accounts
        # The routing and usage tables come back empty: their rows went with the downgrade.
        emptied = [await count(db, row) for row in (RoutingRow, RoutingHistoryRow, UsageRow)]
        assert emptied == [0, 0, 0]
        await populate_routing_again(db)

    run(database_url, scenario)


async def populate_routing_again(db: AsyncEngine) -> None:
    """The recreated tables take rows again (the history's ids count from 1 anew)."""
    async with AsyncSession(db) as session, session.begin():
        session.add(
            RoutingHistoryRow(
                model="intent", changed_at=3.0, actor="admin", current={"default": "1"}
            )
        )
    async with AsyncSession(db) as session:
        assert (await session.scalars(select(RoutingHistoryRow.id))).all() == [1]


def test_down_to_base_and_up_again(database_url):
    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        await populate(db)
        await migrate.downgrade(db, "base")
        assert await migrate.current(db) is None
        assert await table_names(db) == set()
        await migrate.upgrade(db)
        assert await migrate.current(db) == "0002"
        assert await table_names(db) == ALL_TABLES
        assert await schema_differences(db) == []
        assert await count(db, UserRow) == 0

    run(database_url, scenario)


def test_upgrade_in_steps_equals_upgrade_at_once(database_url):
    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db, "0001")
        assert await table_names(db) == ACCOUNT_TABLES
        await migrate.upgrade(db, "0002")
        assert await schema_differences(db) == []

    run(database_url, scenario)


def test_a_migrated_database_survives_a_kill_9_of_the_server(postgres_server):
    """What the outage tests rely on: the private server killed with SIGKILL (every
    backend too) restarts on the same port and data, with every committed row."""
    name = postgres_server.create_database()
    url = postgres_server.url(name)

    async def before(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        await populate(db)

    async def after(db: AsyncEngine) -> None:
        assert await migrate.current(db) == "0002"
        assert await count(db, UserRow) == 3 and await count(db, UsageRow) == 1
        assert await schema_differences(db) == []

    try:
        run(url, before)
        pid = postgres_server.proc.pid
        postgres_server.kill()
        assert not postgres_server.running
        with pytest.raises(OSError):
            postgres_server.execute("SELECT 1")
        postgres_server.start()
        assert postgres_server.proc.pid != pid
        run(url, after)
    finally:
        postgres_server.drop_database(name)
