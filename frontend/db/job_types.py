"""The batch jobs' states and the plain values their queries take and return.

Queries hand out frozen snapshots, not ORM objects: a runner keeps one across awaits,
threads and transactions, and nothing it does to it can be flushed by accident. Field
names are the columns' names (tables.py), so a row converts by name.

Everything here is re-exported by `frontend.db.jobs`, the module callers import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from sqlalchemy import CursorResult, Result, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import IdempotencyKeyRecord, JobAccountRecord, JobChunkRecord, JobFileRecord, JobRecord

# The tables as Core sees them: the queries are conditional UPDATEs and plain SELECTs of
# columns, never ORM objects (a session's identity map would hand back a row as it was
# before an UPDATE of the same transaction).
JOBS = cast(Table, JobRecord.__table__)
FILES = cast(Table, JobFileRecord.__table__)
CHUNKS = cast(Table, JobChunkRecord.__table__)
ACCOUNTS = cast(Table, JobAccountRecord.__table__)
IDEMPOTENCY = cast(Table, IdempotencyKeyRecord.__table__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
ChunkState = Literal["pending", "queued", "running", "done", "skipped"]
JOB_STATES: tuple[JobState, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelling",
    "cancelled",
)
TERMINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
CHUNK_STATES: tuple[ChunkState, ...] = ("pending", "queued", "running", "done", "skipped")
# Where each state may go (`transition` refuses anything else). Terminal states go
# nowhere: a finished job's counters, results and expiry never change again. A
# cancelling job ends cancelled, or failed when one of its last chunks fails for good.
TRANSITIONS: dict[str, tuple[JobState, ...]] = {
    "queued": ("running", "failed", "cancelled"),
    "running": ("succeeded", "failed", "cancelling", "cancelled"),
    "cancelling": ("cancelled", "failed"),
    "succeeded": (),
    "failed": (),
    "cancelled": (),
}
# A chunk a worker may still commit: claimed, or waiting for its next claim.
LIVE_CHUNK_STATES: tuple[ChunkState, ...] = ("queued", "running")
DAY_S = 86_400


def chunk_job_in(*states: str) -> Any:
    """A chunk's job is in one of `states` (an EXISTS correlated to the chunk's row)."""
    return select(JOBS.c.id).where(JOBS.c.id == CHUNKS.c.job_id, JOBS.c.state.in_(states)).exists()


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: the only concurrency primitive here (the same on
    SQLite's single writer and under PostgreSQL's row locks)."""
    return cast(CursorResult[Any], result).rowcount


def dialect_insert(session: AsyncSession) -> Any:
    """INSERT with ON CONFLICT for this session's engine (as usage.add_counts does)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def utc_day(now: float) -> int:
    """The epoch second of the UTC midnight that starts `now`'s day."""
    return int(now // DAY_S) * DAY_S


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the `jobs` table holds it (see tables.JobRecord for each column)."""

    id: str
    owner: str
    account: str
    subject: str
    tier: str
    model: str
    version: str
    task: str
    created_at: float
    updated_at: float
    parameters: dict[str, Any] = field(default_factory=dict)
    key_id: str | None = None
    key_limits: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    text_field: str = "text"
    columns: list[str] | None = None
    state: str = "queued"
    planned: bool = False
    rows_total: int | None = None
    rows_done: int = 0
    rows_failed: int = 0
    rows_reserved: int = 0
    reserved_day: int = 0
    chunks_total: int | None = None
    chunks_done: int = 0
    rate_rows_per_s: float | None = None
    last_commit_at: float | None = None
    seq: int = 0
    waiting: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    plan_dispatched_at: float | None = None
    idempotency_key: str | None = None
    request_id: str | None = None
    notify: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class JobFileRow:
    """One uploaded file of a job (its job is the one it is inserted or read with)."""

    idx: int
    name: str
    format: str  # "jsonl" | "csv"
    bytes: int
    sha256: str
    storage_key: str
    header: list[str] | None = None
    rows: int | None = None  # known after planning
    first_row: int | None = None  # global, 1-based


class ChunkLike(Protocol):
    """What `add_chunks` reads from a plan (frontend/jobs/plan.py's ChunkPlan fits; the
    db layer may not import it)."""

    @property
    def file_idx(self) -> int: ...
    @property
    def idx(self) -> int: ...
    @property
    def start_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def first_row(self) -> int: ...
    @property
    def rows(self) -> int: ...


class LimitsLike(Protocol):
    """An account's job limits (frontend/jobs/limits.py's JobLimits fits); None: none."""

    @property
    def rows_per_day(self) -> int | None: ...
    @property
    def concurrent(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ChunkClaim:
    """A chunk this worker now holds the lease on: what to read, and until when."""

    job_id: str
    idx: int
    file_idx: int
    start_offset: int
    end_offset: int
    first_row: int
    rows: int
    attempts: int  # this claim included
    lease_owner: str
    lease_until: float


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What one attempt wrote: its files' token and exact sizes, and its row counts."""

    output_token: str
    rows_ok: int
    rows_failed: int
    results_bytes: int
    csv_bytes: int
    errors_bytes: int
    # Generation jobs: the tokens of the rows answered (the usage ledger's, at the commit).
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CompleteResult:
    """The chunk commit's answer. `won` False: another attempt committed this chunk first
    (or its job ended), so this attempt's files are referenced by nobody."""

    won: bool
    state: str | None = None  # the job's state after the commit
    rows_done: int = 0
    rows_failed: int = 0
    chunks_done: int = 0
    chunks_total: int | None = None
    seq: int = 0

    @property
    def last(self) -> bool:
        """This commit completed the job's last chunk: the caller finishes the job in the
        same transaction (`state` running → succeeded, cancelling → cancelled)."""
        return self.won and self.chunks_total is not None and self.chunks_done >= self.chunks_total


@dataclass(frozen=True, slots=True)
class DoneChunk:
    """A committed chunk, as downloads and cleanup need it (sizes from SQL, not files)."""

    idx: int
    first_row: int
    rows: int
    output_token: str
    rows_ok: int
    rows_failed: int
    results_bytes: int
    csv_bytes: int
    errors_bytes: int


@dataclass(frozen=True, slots=True)
class Work:
    """One unit of dispatched work (frontend/jobs/dispatch.py's WorkItem): plan a job, or
    run its chunk `idx`."""

    kind: Literal["plan", "chunk"]
    job_id: str
    idx: int | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """`admit`'s answer. Admitted: the account's counts after it. Refused: `limit` names
    the limit (concurrency is checked first), `used` is what it already holds against it
    (non-terminal jobs, or rows reserved today) and `limit_value` its value."""

    admitted: bool
    active: int
    rows_day: int
    day: int
    requested: int
    limit: Literal["job_rows_per_day", "concurrent_jobs"] | None = None
    used: int = 0
    limit_value: int | None = None


IdemOutcome = Literal["claimed", "in_progress", "replay", "reused", "done"]


@dataclass(frozen=True, slots=True)
class IdemClaim:
    """`claim_idempotency`'s answer:

    - "claimed": this request holds the key now (new, expired or abandoned): go on, then
      `bind_idempotency` with the job or `drop_idempotency` on failure;
    - "in_progress": a twin is being submitted (409 idempotency_in_progress);
    - "replay": done with this request's hash (200, the stored `job_id`);
    - "reused": done with another hash (409 idempotency_key_reused);
    - "done": done, but this request's hash is not known yet (multipart, before the
      body): compare `request_hash` once it is.
    """

    outcome: IdemOutcome
    job_id: str | None = None
    request_hash: str | None = None
    created_at: float | None = None  # the claim's own time: pass it to bind/drop
