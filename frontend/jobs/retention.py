"""The retention sweep (design §4.2): what a finished job leaves is removed once it expires.

Each step is idempotent and takes only what is past its age, so concurrent sweeps from
several frontends and workers are harmless (one deletes, the others find nothing). A
job's files go before its rows: a sweep killed between the two leaves a row whose files
are gone, which the next sweep deletes again; the other order would leave files nobody
references. File I/O runs in threads, never inside a database transaction.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import jobs
from ..db.database import Database
from ..job_settings import JobSettings
from ..storage.base import Storage

log = logging.getLogger("infergate.jobs")

EXPIRED_PER_PASS = 50  # jobs deleted per sweep (design: 50): the next sweep takes the rest
# A job's directory exists before its row: the upload commits the inputs, then the job is
# inserted. Only a directory this old without a row is an orphan (an insert that failed
# and a clean-up killed with its process).
ORPHAN_AGE_S = 3600.0
_KNOWN_BATCH = 500  # ids per IN (...) lookup: far below SQLite's bound on parameters


@dataclasses.dataclass(frozen=True, slots=True)
class SweepCounts:
    """What one sweep removed."""

    jobs: int = 0  # expired jobs, their files and rows
    idempotency_keys: int = 0
    temp_files: int = 0  # uncommitted writes of killed processes
    orphans: int = 0  # job directories without a job row


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


async def sweep(
    database: Database,
    storage: Storage,
    now: float,
    settings: JobSettings,
    *,
    limit: int = EXPIRED_PER_PASS,
    orphan_age_s: float = ORPHAN_AGE_S,
) -> SweepCounts:
    """One pass. `now` is wall-clock time (time.time()): the orphans' cutoff is compared
    with file modification times."""
    expired = await _expired_jobs(database, storage, now, limit)
    keys = await database.run(
        "jobs.drop_expired_idempotency", lambda s: jobs.drop_expired_idempotency(s, now)
    )
    temp = await anyio.to_thread.run_sync(storage.sweep_temp, settings.tmp_max_age_s)
    orphans = await _orphans(database, storage, now - orphan_age_s, limit)
    counts = SweepCounts(expired, keys, temp, orphans)
    if expired or keys or temp or orphans:
        log.info("job retention sweep", extra=dataclasses.asdict(counts))
    return counts


async def _expired_jobs(database: Database, storage: Storage, now: float, limit: int) -> int:
    ids = await database.run("jobs.expired", lambda s: jobs.expired(s, now, limit))
    deleted = 0
    for job_id in ids:
        if not await _delete_files(storage, job_id):
            continue  # its rows stay, so the next sweep tries the files again
        if await _delete_rows(database, job_id):
            deleted += 1
    return deleted


async def _delete_files(storage: Storage, job_id: str) -> bool:
    try:
        await anyio.to_thread.run_sync(storage.delete_prefix, job_prefix(job_id))
    except (OSError, ValueError) as exc:  # ValueError: a name that is no storage key
        log.warning("job files not deleted", extra={"job_id": job_id, "error": type(exc).__name__})
        return False
    return True


async def _delete_rows(database: Database, job_id: str) -> bool:
    return await database.run("jobs.delete_job", lambda s: jobs.delete_job(s, job_id))


async def _orphans(database: Database, storage: Storage, cutoff: float, limit: int) -> int:
    """Deletes at most `limit` job directories older than `cutoff` whose job has no row."""

    def old_prefixes() -> list[str]:
        return [job_id for job_id, mtime in storage.job_prefixes() if mtime < cutoff]

    candidates = await anyio.to_thread.run_sync(old_prefixes)
    removed = 0
    for start in range(0, len(candidates), _KNOWN_BATCH):
        batch = candidates[start : start + _KNOWN_BATCH]
        known = await _known(database, batch)
        for job_id in batch:
            if removed >= limit:
                return removed
            if job_id not in known and await _delete_files(storage, job_id):
                removed += 1
    return removed


async def _known(database: Database, ids: Sequence[str]) -> set[str]:
    """Those of `ids` that have a job row."""

    async def read(session: AsyncSession) -> set[str]:
        found = await session.execute(select(jobs.JOBS.c.id).where(jobs.JOBS.c.id.in_(ids)))
        return set(found.scalars())

    return await database.run("jobs.known_ids", read)
