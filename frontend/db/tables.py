"""The schema, in one place. Times are UTC epoch seconds (float, as the API shows them);
JSON columns hold small documents the API reads whole (scopes, limits, labels, routing).

Changing a table means a new Alembic revision in `migrations/versions/` (the test
`test_db_schema.py` fails while the tables and the migrations disagree)."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names fixed by convention, so that migrations can name what they alter on
# every engine (SQLite's batch mode needs names to drop or change a constraint).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    # Lower-cased: the unique index makes "Alice" and "alice" one name on every engine.
    username_key: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    tier: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    # Revision 0004: the address job e-mails go to, once its owner proved it theirs with
    # a mailed code (only the code's keyed hash is kept, and only until it is used).
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    email_verified_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    email_pending: Mapped[str | None] = mapped_column(String(320), nullable=True)
    email_code_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    email_code_expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    email_code_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The account's default: its jobs mail their end without asking (`notify` overrides).
    email_jobs: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # "user:<id>", "key:<id>" (standalone, or minted by that key) or "bootstrap".
    owner: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    tier: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    created_by: Mapped[str] = mapped_column(String(64), index=True)
    # HMAC-SHA256 of the key under a key derived from the server secret; never the key.
    digest: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # {"models": [...] | null, "routes": [...] | null}; null: everything the role allows.
    scopes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Per-key overrides of the tier: {"requests_per_minute", "tokens_per_minute",
    # "max_concurrent"}; null or a missing field: the tier's.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Rotation: the previous secret's digest stays valid until `previous_valid_until`.
    previous_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_valid_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    rotated_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class RoutingRow(Base):
    """An admin's routing of one model (absent: the routing file's defaults)."""

    __tablename__ = "routing"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Double)
    updated_by: Mapped[str] = mapped_column(String(64))


class RoutingHistoryRow(Base):
    __tablename__ = "routing_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    changed_at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # null: the file's defaults (before the first change, or after a reset).
    previous: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    current: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[float] = mapped_column(Double, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(160))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UsageRow(Base):
    """One minute of one subject's use of one model version; counts only ever grow."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_minute", "minute"),
        Index("ix_usage_ledger_account_minute", "account", "minute"),
    )

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(16), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch s, a multiple of 60
    account: Mapped[str] = mapped_column(String(64))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    items: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)


# --- batch jobs (revision 0003; queries in jobs.py, job_chunks.py, job_limits.py) ---------
# Named *Record: the frozen snapshots the queries hand out are jobs.JobRow / JobFileRow.


class JobRecord(Base):
    """One batch job. Counters move only in the chunk commit's transaction; `seq` grows
    with every commit and state change (the SSE event id)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),  # listing, keyset
        Index("ix_jobs_state_updated", "state", "updated_at"),  # reconciler, gauges
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))  # who sees it
    account: Mapped[str] = mapped_column(String(64))  # whose limits, quota and usage
    # Snapshots at submission: the ledger's subject, the tier and key limits at run time.
    subject: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    key_limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(16))  # resolved once, at submission
    task: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    text_field: Mapped[str] = mapped_column(String(128))
    columns: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # null: all
    state: Mapped[str] = mapped_column(String(16))
    planned: Mapped[bool] = mapped_column(Boolean, default=False)  # chunk rows complete
    rows_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    # Rows/day reserved at submission (an estimate, settled at planning) and its UTC day.
    rows_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_day: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    rate_rows_per_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_commit_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # {"reason": "token_quota" | "model_unavailable" | "retrying", "until": t}
    waiting: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # {code, message}
    plan_dispatched_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Revision 0004: {"callback_url", "callback_secret" (sealed), "email"}; null: none.
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # finished_at + retention: the sweep removes the job's rows and files after it.
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)


class JobFileRecord(Base):
    __tablename__ = "job_files"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)  # upload order, from 0
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))  # "jsonl" | "csv"
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    header: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # CSV column names
    # Known after planning: its rows, and the global 1-based number of its first one.
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    first_row: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobChunkRecord(Base):
    """A byte range of one file, run as one unit: pending → queued → running → done, or
    skipped when its job ends first. Only the commit that moves it to done sets
    `output_token`; results are read through that token, never from a directory."""

    __tablename__ = "job_chunks"
    __table_args__ = (
        Index("ix_job_chunks_state_lease", "state", "lease_until"),
        Index("ix_job_chunks_state_dispatched", "state", "dispatched_at"),
    )

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)  # within the job, from 0
    file_idx: Mapped[int] = mapped_column(Integer)
    start_offset: Mapped[int] = mapped_column(BigInteger)
    end_offset: Mapped[int] = mapped_column(BigInteger)
    first_row: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    lease_owner: Mapped[str | None] = mapped_column(String(96), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    not_before: Mapped[float | None] = mapped_column(Double, nullable=True)  # deferred
    dispatched_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    output_token: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rows_ok: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_failed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Exact sizes of the winning attempt's files (byte ranges of the results).
    results_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    csv_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    errors_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class JobAccountRecord(Base):
    """Per account: its non-terminal jobs and the rows it reserved on one UTC day. A
    conditional UPDATE of this row admits a job, so the limits are exact without Redis."""

    __tablename__ = "job_accounts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    active: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[int] = mapped_column(BigInteger, default=0)  # epoch s of a UTC midnight
    rows_day: Mapped[int] = mapped_column(BigInteger, default=0)


class IdempotencyKeyRecord(Base):
    """An Idempotency-Key of one owner: in_progress while its submission runs, then done
    with the job it made. The primary key is what lets exactly one concurrent twin in."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # "in_progress" | "done"
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


# --- notifications (revision 0004; queries in notifications.py, webhooks.py) -----------


class WebhookRecord(Base):
    """An owner's endpoint for job events. The signing secret is sealed (AES-GCM under a
    key derived from the server secret): deliveries must sign with it, so it cannot be
    hashed like an API key."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_owner_created", "owner", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(8192))
    events: Mapped[list[Any]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(256), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(256))
    previous_secret: Mapped[str | None] = mapped_column(String(256), nullable=True)
    previous_valid_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Events whose every attempt failed, in a row; a delivered one resets it.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    rotated_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_delivered_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_failed_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class NotificationEventRecord(Base):
    """One event (job.succeeded, ...), written in the transaction of the state change
    that caused it; its id is every delivery's Webhook-Id."""

    __tablename__ = "notification_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class NotificationDeliveryRecord(Base):
    """The outbox: one event to one destination (a webhook, a job's callback URL, an
    e-mail), pending until delivered or out of retries. A dispatcher claims a due one
    with a lease; a crash before it records the attempt only delays it to the lease's
    end (then it is sent again, under the same event id)."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("ix_notification_deliveries_state_due", "state", "next_attempt_at"),
        Index("ix_notification_deliveries_webhook", "webhook_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # "webhook" | "callback" | "email"
    webhook_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A callback's URL and its sealed secret (a webhook's live on its row; an e-mail's
    # address is the account's verified one when it is sent).
    target: Mapped[str | None] = mapped_column(String(8192), nullable=True)
    secret: Mapped[str | None] = mapped_column(String(256), nullable=True)
    account: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # "pending" | "delivered" | "failed"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    lease_owner: Mapped[str | None] = mapped_column(String(96), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    last_latency_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)


class NotificationAttemptRecord(Base):
    """The delivery log: every attempt, kept with its delivery."""

    __tablename__ = "notification_attempts"

    # Its own key: two dispatchers whose leases crossed may both log an attempt numbered
    # alike (each counts from what it claimed); both are kept.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer)  # from 1
    at: Mapped[float] = mapped_column(Double)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # When the next attempt was scheduled (null: delivered or the last one).
    next_attempt_at: Mapped[float | None] = mapped_column(Double, nullable=True)
