"""The migrations on both engines (a fresh SQLite file, a fresh database on a private
PostgreSQL): from empty to head, and a populated database down to 0002 and to 0001 and
back, with the older revisions' rows kept and the schema equal to the code's at every
head."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from frontend.db import migrate
from frontend.db.tables import (
    ApiKeyRow,
    AuditRow,
    IdempotencyKeyRecord,
    JobAccountRecord,
    JobChunkRecord,
    JobFileRecord,
    JobRecord,
    RoutingHistoryRow,
    RoutingRow,
    UsageRow,
    UserRow,
)
from tests.db_support import (
    ACCOUNT_TABLES,
    JOB_TABLES,
    NOTIFY_TABLES,
    ROUTING_USAGE_TABLES,
    engine,
    schema_differences,
    table_names,
)

pytestmark = pytest.mark.integration
ALL_TABLES = ACCOUNT_TABLES | ROUTING_USAGE_TABLES | JOB_TABLES | NOTIFY_TABLES
JOB_RECORDS = (JobRecord, JobFileRecord, JobChunkRecord, JobAccountRecord, IdempotencyKeyRecord)


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
    await populate_jobs(db)


async def populate_jobs(db: AsyncEngine) -> None:
    """One job with its file and chunk, its account's limits row and its key."""
    async with AsyncSession(db) as session, session.begin():
        session.add(
            JobRecord(
                id="job_" + "a" * 26,
                owner="user:u1",
                account="user:u1",
                subject="key:1",
                tier="free",
                model="intent",
                version="2",
                task="text-classification",
                parameters={"top_k": 1},
                text_field="text",
                state="running",
                planned=True,
                rows_total=10,
                rows_done=0,
                rows_failed=0,
                rows_reserved=10,
                reserved_day=1_699_920_000,
                chunks_total=1,
                chunks_done=0,
                seq=1,
                created_at=3.0,
                updated_at=3.0,
            )
        )
        session.add(
            JobFileRecord(
                job_id="job_" + "a" * 26,
                idx=0,
                name="rows.jsonl",
                format="jsonl",
                bytes=120,
                sha256="0" * 64,
                storage_key="jobs/job_aaaa/inputs/0.jsonl",
            )
        )
        session.add(
            JobChunkRecord(
                job_id="job_" + "a" * 26,
                idx=0,
                file_idx=0,
                start_offset=0,
                end_offset=120,
                first_row=1,
                rows=10,
                state="pending",
                attempts=0,
            )
        )
        session.add(JobAccountRecord(account="user:u1", active=1, day=1_699_920_000, rows_day=10))
        session.add(
            IdempotencyKeyRecord(
                owner="user:u1",
                key="k1",
                state="done",
                job_id="job_" + "a" * 26,
                created_at=3.0,
                expires_at=86_403.0,
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
        assert await migrate.current(db) == migrate.head() == "0004"
        assert await table_names(db) == ALL_TABLES
        assert await schema_differences(db) == []
        await migrate.require_head(db)  # passes now
        await migrate.upgrade(db)  # at head already: nothing to do
        assert await migrate.current(db) == "0004"

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
        assert await migrate.current(db) == "0004"
        assert await schema_differences(db) == []
        assert await account_rows(db) == accounts
        # The routing, usage and job tables come back empty: their rows went with the
        # downgrade.
        emptied = [await count(db, row) for row in (RoutingRow, RoutingHistoryRow, UsageRow)]
        assert emptied == [0, 0, 0]
        assert [await count(db, row) for row in JOB_RECORDS] == [0] * len(JOB_RECORDS)
        await populate_routing_again(db)
        await populate_jobs(db)  # the recreated job tables take rows again

    run(database_url, scenario)


def test_down_to_0002_drops_only_the_job_tables(database_url):
    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db)
        await populate(db)
        await migrate.downgrade(db, "0002")
        assert await migrate.current(db) == "0002"
        assert await table_names(db) == ACCOUNT_TABLES | ROUTING_USAGE_TABLES
        assert await count(db, UsageRow) == 1 and await count(db, RoutingHistoryRow) == 1
        await migrate.upgrade(db)
        assert await schema_differences(db) == []
        assert [await count(db, row) for row in JOB_RECORDS] == [0] * len(JOB_RECORDS)

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
        assert await migrate.current(db) == "0004"
        assert await table_names(db) == ALL_TABLES
        assert await schema_differences(db) == []
        assert await count(db, UserRow) == 0

    run(database_url, scenario)


def test_upgrade_in_steps_equals_upgrade_at_once(database_url):
    async def scenario(db: AsyncEngine) -> None:
        await migrate.upgrade(db, "0001")
        assert await table_names(db) == ACCOUNT_TABLES
        await migrate.upgrade(db, "0002")
        assert await table_names(db) == ACCOUNT_TABLES | ROUTING_USAGE_TABLES
        await migrate.upgrade(db, "0003")
        await migrate.upgrade(db, "0004")
        assert await table_names(db) == ALL_TABLES
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
        assert await migrate.current(db) == "0004"
        assert await count(db, UserRow) == 3 and await count(db, UsageRow) == 1
        assert await count(db, JobRecord) == 1 and await count(db, JobChunkRecord) == 1
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


def test_the_job_queries_keep_their_promises_on_each_engine(database_url):
    """The batch jobs' queries (tests/unit/test_jobs_db.py holds each on SQLite) under
    contention on this engine too: on PostgreSQL the dialect's upserts, RETURNING and
    row locks decide, and the lock order (job row first) leaves no deadlock."""
    from frontend.db import jobs
    from frontend.db.database import Database
    from frontend.observability.metrics import Metrics
    from frontend.settings import DatabaseSettings
    from tests.unit.test_jobs_db import FILE, NOW, TODAY, Limits, call, new_job, outcome, plans

    async def scenario() -> None:
        db = Database(database_url, DatabaseSettings(deadline_s=20.0), Metrics())
        await migrate.upgrade(db.engine)
        try:
            job = new_job(1)
            admitted = await asyncio.gather(
                *(call(db, jobs.admit, job.account, 10, Limits(None, 3), TODAY) for _ in range(30))
            )
            assert sum(a.admitted for a in admitted) == 3
            claims = await asyncio.gather(
                *(
                    call(db, jobs.claim_idempotency, job.owner, "k", "h", NOW, 86_400, 3_900)
                    for _ in range(10)
                )
            )
            assert sorted(c.outcome for c in claims) == ["claimed"] + ["in_progress"] * 9
            await call(db, jobs.insert_job, job, [FILE])
            assert await call(db, jobs.bind_idempotency, job.owner, "k", job.id, "h")
            await call(db, jobs.add_chunks, job.id, plans(8))
            await call(db, jobs.add_chunks, job.id, plans(8))  # planning again: no change
            assert await call(db, jobs.finish_planning, job.id, 80, 8, [(1, 80)], NOW)
            windows = await asyncio.gather(
                *(call(db, jobs.next_to_dispatch, job.id, 4, NOW) for _ in range(6))
            )
            assert sorted(i for w in windows for i in w) == [0, 1, 2, 3]
            leases = await asyncio.gather(
                *(call(db, jobs.claim_chunk, job.id, 0, f"w:{n}", NOW, 30.0) for n in range(8))
            )
            assert sum(lease is not None for lease in leases) == 1
            commits = await asyncio.gather(
                *(
                    call(db, jobs.complete_chunk, job.id, idx, outcome(f"t{idx}-{n}"), NOW + 1)
                    for n in range(5)
                    for idx in range(4)
                ),
                call(db, jobs.stale_work, NOW + 100, 60, 100),
            )
            assert sum(r.won for r in commits[:-1]) == 4
            read = await call(db, jobs.job, job.id)
            assert read is not None and (read.chunks_done, read.rows_done, read.seq) == (4, 36, 5)
            assert await call(db, jobs.transition, job.id, "cancelling", NOW + 2)
            assert await call(db, jobs.finish_stalled, NOW + 3, 10) == [(job.id, "cancelled")]
            assert not await call(db, jobs.transition, job.id, "running", NOW + 4)
            page = await call(
                db, jobs.page, owner=job.owner, states=None, model=None, after=None, limit=10
            )
            assert [j.id for j in page] == [job.id]
            assert await call(db, jobs.delete_job, job.id)
            left = [
                await count(db.engine, row) for row in (JobRecord, JobChunkRecord, JobFileRecord)
            ]
            assert left == [0, 0, 0] and await count(db.engine, IdempotencyKeyRecord) == 0
        finally:
            await db.close()

    asyncio.run(scenario())
