"""Jobs in a SQLite FILE migrated to head, inserted through frontend/db/jobs.py, for the
tests of the reconciler and the retention sweep (each Database.run is its own
connection, as in production)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontend.db import jobs, migrate
from frontend.db.database import Database
from frontend.db.jobs import ChunkOutcome, JobFileRow, JobRow
from frontend.jobs.dispatch import WorkItem
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings

T = TypeVar("T")
NOW = 1_800_000_000.0
LEASE_S = 30.0
SETTINGS = DatabaseSettings(deadline_s=20.0, statement_timeout_s=10.0)


@dataclass(frozen=True, slots=True)
class Plan:  # the shape of frontend/jobs/plan.py's ChunkPlan
    file_idx: int
    idx: int
    start_offset: int
    end_offset: int
    first_row: int
    rows: int


def scenario(
    tmp_path: Path, body: Callable[[Database], Awaitable[T]], metrics: Metrics | None = None
) -> T:
    async def run() -> T:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", SETTINGS, metrics or Metrics())
        await migrate.upgrade(db.engine)
        try:
            return await asyncio.wait_for(body(db), 60)
        finally:
            await db.close()

    return asyncio.run(run())


def call(db: Database, query: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any):
    """`query(session, *args, **kwargs)` in its own transaction."""
    return db.run(query.__name__, lambda s: query(s, *args, **kwargs))


def job_id(n: int) -> str:
    return f"job_{n:026d}"


def new_job(n: int, **fields: Any) -> JobRow:
    return JobRow(
        id=job_id(n),
        owner="user:a",
        account="user:a",
        subject="key:1",
        tier="free",
        model="intent",
        version="2",
        task="text-classification",
        created_at=fields.pop("created_at", NOW),
        updated_at=NOW,
        parameters={"top_k": 1},
        **fields,
    )


def input_file(n: int) -> JobFileRow:
    return JobFileRow(
        idx=0,
        name="rows.csv",
        format="csv",
        bytes=1_000,
        sha256="ab" * 32,
        storage_key=f"jobs/{job_id(n)}/inputs/0.csv",
        header=["id", "text"],
    )


async def queued_job(db: Database, n: int, **fields: Any) -> str:
    """A submitted job, not planned yet."""
    job = new_job(n, **fields)
    await call(db, jobs.insert_job, job, [input_file(n)])
    return job.id


async def running_job(db: Database, n: int, chunks: int = 4) -> str:
    """A planned, running job of `chunks` pending chunks of 10 rows, started at NOW."""
    job = await queued_job(db, n)
    plans = [Plan(0, i, i * 100, (i + 1) * 100, i * 10 + 1, 10) for i in range(chunks)]
    await call(db, jobs.add_chunks, job, plans)
    assert await call(db, jobs.finish_planning, job, chunks * 10, chunks, [(1, chunks * 10)], NOW)
    return job


def outcome(token: str = "0123abcd") -> ChunkOutcome:
    return ChunkOutcome(token, 9, 1, results_bytes=900, csv_bytes=400, errors_bytes=80)


async def chunk_row(db: Database, job: str, idx: int) -> dict[str, Any]:
    async def read(s: AsyncSession) -> dict[str, Any]:
        c = jobs.CHUNKS.c
        found = await s.execute(select(jobs.CHUNKS).where(c.job_id == job, c.idx == idx))
        return dict(found.one()._mapping)

    return await db.run("read", read)


async def count(db: Database, table: Any, **where: Any) -> int:
    async def read(s: AsyncSession) -> int:
        query = select(func.count()).select_from(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        return int((await s.execute(query)).scalar_one())

    return await db.run("count", read)


class Recorder:
    """A dispatcher that keeps what it is sent; `sent` is set at each send."""

    def __init__(self, depth: int | None = None) -> None:
        self.batches: list[list[WorkItem]] = []
        self.sent = asyncio.Event()
        self._depth = depth

    async def send(self, work: Sequence[WorkItem]) -> None:
        self.batches.append(list(work))
        self.sent.set()

    @property
    def items(self) -> list[WorkItem]:
        return [item for batch in self.batches for item in batch]

    async def ping(self) -> None:
        return None

    async def depth(self) -> int | None:
        return self._depth

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
