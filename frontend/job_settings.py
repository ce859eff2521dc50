"""Batch-job settings (INFERGATE_JOBS__*): files, chunks, executors, recovery timings.

Kept apart from settings.py, which nests them as `Settings.jobs`. A check that needs
other sections' values (the upload deadline, server.upload_timeout_s) is on Settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

# Brokers Celery is used with here: Redis (a db other than the state store's) or AMQP.
BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")


class JobSettings(BaseModel):
    """Batch jobs (POST /v1/jobs): their files, chunks, executors and recovery timings.
    SQL is the system of record; the broker (Celery mode) carries hints only."""

    executor: Literal["auto", "local", "celery", "off"] = Field(
        "auto",
        description="auto: celery when broker_url is set, else in-process; off: jobs are "
        "accepted and held, never run",
    )
    broker_url: SecretStr | None = Field(
        None, description="Celery broker, redis://…/1 (not the state store's db) or amqp://…"
    )
    queue: str = Field(
        "infergate.jobs",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the broker queue job tasks go to",
    )
    storage_dir: Path = Field(
        Path(".infergate/jobs"),
        description="job inputs and results, beside the embedded database; a volume "
        "shared by every frontend and worker host",
    )
    max_file_bytes: int = Field(500 << 20, ge=1024, le=64 << 30, description="one input file")
    max_files: int = Field(8, ge=1, le=64, description="input files per job")
    max_inline_rows: int = Field(
        10_000, ge=1, le=1_000_000, description="rows of a JSON body's `inputs`"
    )
    max_inline_body_bytes: int = Field(
        8 << 20, ge=1024, le=64 << 20, description="a JSON job submission's body"
    )
    chunk_rows: int = Field(256, ge=1, le=4096, description="rows per chunk (capped per task)")
    generation_chunk_rows: int = Field(
        8, ge=1, le=1024, description="rows per chunk of a text-generation job"
    )
    generation_rows_in_flight: int = Field(
        2, ge=1, le=64, description="generation rows at once per worker process"
    )
    # Triton's max_batch_size is at most 256 for the served models.
    triton_batch_rows: int = Field(32, ge=1, le=256, description="rows per Triton request")
    triton_requests_in_flight: int = Field(
        1,
        ge=1,
        le=64,
        description="Triton requests at once per worker process (keeps an instance free "
        "for online traffic: priority does not pre-empt an executing batch)",
    )
    yield_factor: float = Field(
        50.0,
        ge=0,
        le=100,
        description="after a job request slowed by online traffic, this process's job "
        "requests pause for this many times its duration (0: never)",
    )
    contention_ratio: float = Field(
        1.5,
        gt=1,
        le=100,
        description="a job request this many times its usual cost per character is "
        "slowed by online traffic",
    )
    triton_priority: int = Field(
        2, ge=0, le=10, description="Triton priority level of batch requests (online is 1)"
    )
    chunks_in_flight_per_job: int = Field(
        4, ge=1, le=1024, description="chunks of one job queued or running at once"
    )
    local_slots: int = Field(1, ge=1, le=64, description="in-process executor's chunk slots")
    worker_concurrency: int = Field(1, ge=1, le=256, description="Celery worker pool size")
    lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="a running chunk's lease, renewed every third of it (keep it far above "
        "clock skew between hosts)",
    )
    reconcile_s: float = Field(5.0, gt=0, le=300, description="reconciler pass interval")
    redispatch_s: float = Field(
        60.0, ge=1, le=86_400, description="queued work not started this long is re-sent"
    )
    chunk_timeout_s: float = Field(300.0, ge=1, le=86_400, description="one chunk attempt")
    visibility_timeout_s: float = Field(
        900.0,
        ge=60,
        le=30 * 86_400,
        description="broker redelivery of an unacked task; above chunk_timeout_s + 60",
    )
    max_chunk_attempts: int = Field(20, ge=1, le=1000, description="before the chunk fails")
    dispatch_timeout_s: float = Field(
        2.0, gt=0, le=60, description="sending one batch of tasks to the broker"
    )
    retention_s: int = Field(
        7 * 86_400,
        ge=60,
        le=365 * 86_400,
        description="a job's files and rows, kept this long after it ends",
    )
    sweep_s: float = Field(300.0, gt=0, le=86_400, description="retention sweep interval")
    tmp_max_age_s: float = Field(
        7200.0,
        ge=60,
        le=30 * 86_400,
        description="unpublished temporary files older than this are removed",
    )
    idempotency_ttl_s: int = Field(
        86_400, ge=60, le=30 * 86_400, description="an Idempotency-Key is remembered this long"
    )
    idempotency_stale_s: float = Field(
        3900.0,
        ge=60,
        le=30 * 86_400,
        description="an in-progress key this old is taken over (its request died)",
    )
    events_per_s: float = Field(2.0, gt=0, le=50, description="event stream polls per second")
    events_keepalive_s: float = Field(
        15.0, gt=0, le=300, description="event stream keep-alive comment interval"
    )
    busy_retry_after_s: int = Field(
        30, ge=1, le=86_400, description="Retry-After of a concurrent-jobs refusal"
    )
    min_free_bytes: int = Field(
        1 << 30, ge=0, le=1 << 50, description="free space kept on storage_dir's volume"
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, le=60, description="running chunks' time to finish at shutdown"
    )
    fsync: bool = Field(True, description="fsync job files before publishing them")
    worker_metrics_port: int = Field(
        0, ge=0, le=65_535, description="Celery worker's Prometheus port (0: off)"
    )

    @field_validator("broker_url")
    @classmethod
    def broker_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the URL: it may carry a password.
        if value is not None and not value.get_secret_value().startswith(BROKER_SCHEMES):
            raise ValueError(f"jobs.broker_url must start with one of {', '.join(BROKER_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def timings_agree(self) -> JobSettings:
        # Celery redelivers an unacked task after the visibility timeout: below the longest
        # chunk (plus Celery's time-limit backstop of 60 s) a running chunk would be run
        # twice for nothing.
        if self.visibility_timeout_s <= self.chunk_timeout_s + 60:
            raise ValueError("jobs.visibility_timeout_s must be above jobs.chunk_timeout_s + 60")
        if self.executor == "celery" and self.broker_url is None:
            raise ValueError("jobs.executor 'celery' needs jobs.broker_url")
        # A chunk attempt writes through a temporary file: the sweep must not take it.
        if self.tmp_max_age_s <= self.chunk_timeout_s:
            raise ValueError("jobs.tmp_max_age_s must be above jobs.chunk_timeout_s")
        return self
