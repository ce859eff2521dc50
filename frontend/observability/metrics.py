"""Prometheus metrics, created per app (no import-time globals). With several uvicorn
workers, `python -m frontend` sets PROMETHEUS_MULTIPROC_DIR before any worker starts and
/metrics aggregates every worker's files."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
# One batch-job chunk attempt: from a 256-row classification chunk to a generation one.
CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
# State change to delivery: the first attempt's (sub-second) to a retried one's (hours).
NOTIFY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)


class _NotExported:
    """Stands in for a gauge that must not appear at all: `infergate_redis_up 0` without
    Redis configured reads as an outage. Even unregistered, a multiprocess gauge would
    write a 0 into the shared files, so none is created."""

    def set(self, value: float) -> None:
        del value


class Metrics:
    def __init__(self, redis_configured: bool = False) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "infergate_requests",
            "HTTP requests answered",
            ["route", "method", "status", "model", "version"],
            registry=r,
        )
        self.latency = Histogram(
            "infergate_request_duration_seconds",
            "Whole request time in the frontend",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frontend_time = Histogram(
            "infergate_frontend_overhead_seconds",
            "Request time spent outside Triton (parsing, checks, shaping, serialisation)",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.triton_time = Histogram(
            "infergate_triton_duration_seconds",
            "Time waiting for Triton per inference call",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram(
            "infergate_batch_items",
            "Texts per inference request sent to Triton",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "infergate_in_flight_requests",
            "Requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )

        self.redis_up: Gauge | _NotExported = _NotExported()
        if redis_configured:
            self.redis_up = Gauge(
                "infergate_redis_up",
                "1 while this worker reaches Redis, 0 after a failed call (until one succeeds)",
                registry=r,
                multiprocess_mode="livemin",
            )
        self.redis_errors = Counter(
            "infergate_redis_errors",
            "Redis calls that failed or were skipped during the cool-down after a failure",
            ["operation", "error"],
            registry=r,
        )
        self.database_up = Gauge(
            "infergate_database_up",
            "1 while this worker reaches the database, 0 after a failed call (until one succeeds)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.database_up.set(1)
        self.database_errors = Counter(
            "infergate_database_errors",
            "Database calls that failed or were skipped during the cool-down after a failure",
            ["operation", "error"],
            registry=r,
        )
        self.ledger_pending = Gauge(
            "infergate_usage_ledger_pending_rows",
            "Usage-ledger rows counted in this worker and not yet written to the database",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_dropped = Counter(
            "infergate_usage_ledger_dropped_rows",
            "Usage-ledger rows dropped unwritten: the database stayed unreachable for longer "
            "than this worker's pending rows can hold (the oldest minutes go first)",
            registry=r,
        )
        self.ratelimit = Counter(
            "infergate_ratelimit_decisions",
            "Rate-limit decisions: allowed, limited, or taken by the per-process fallback "
            "(allowed_local / limited_local) or refused because Redis is down (unavailable)",
            ["result"],
            registry=r,
        )
        self.auth_failures = Counter(
            "infergate_auth_failures",
            "Requests refused by authentication (401) or authorisation (403)",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "infergate_quota_tokens",
            "Tokens reserved and settled against daily token quotas",
            ["event"],
            registry=r,
        )

        self.cache = Counter(
            "infergate_cache_items",
            "Cache lookups per input item: hit, miss, or coalesced (a miss that waited for "
            "the same item being computed by a concurrent request)",
            ["model", "result"],
            registry=r,
        )

        self.variant_requests = Counter(
            "infergate_variant_requests",
            "Requests per routing decision: policy (explicit, default, rollout, experiment), "
            "experiment variant and version, and outcome (ok, error)",
            ["model", "policy", "variant", "version", "outcome"],
            registry=r,
        )
        self.variant_latency = Histogram(
            "infergate_variant_duration_seconds",
            "Inference time per experiment variant",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.variant_labels = Counter(
            "infergate_variant_predicted_labels",
            "Predicted labels per experiment variant",
            ["model", "variant", "label"],
            registry=r,
        )
        self.shadow = Counter(
            "infergate_shadow_items",
            "Items sent to a shadow version: agree / disagree with the primary answer, "
            "error, or skipped (too many shadow calls already running)",
            ["model", "version", "result"],
            registry=r,
        )

        # Text generation (the model's own counters — active sequences, queue, decode
        # steps, cancellations — are on Triton's metrics port: infergate_chat_*).
        self.ttft = Histogram(
            "infergate_generation_time_to_first_token_seconds",
            "From the request's arrival to the first generated token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "infergate_generation_inter_token_seconds",
            "Time between two generated tokens of one stream",
            ["model"],
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.generated_tokens = Counter(
            "infergate_generation_tokens",
            "Tokens by kind: prompt (read) and completion (generated)",
            ["model", "kind"],
            registry=r,
        )
        self.generations = Counter(
            "infergate_generations",
            "Generations by outcome: stop, length, error, refused, disconnected",
            ["model", "outcome"],
            registry=r,
        )
        self.active_generations = Gauge(
            "infergate_generation_active",
            "Generations in progress in this frontend",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )

        # Batch jobs. The first three come from SQL, refreshed by the reconciler pass of
        # every process: all read the same rows, hence "max" across processes, not a sum.
        self.jobs = Gauge(
            "infergate_jobs",
            "Batch jobs per state, as the database holds them",
            ["state"],
            registry=r,
            multiprocess_mode="max",
        )
        self.job_queue_depth = Gauge(
            "infergate_job_queue_depth",
            "Batch-job chunks waiting: queued in the database (sql) and tasks in the "
            "broker's queue (broker)",
            ["where"],
            registry=r,
            multiprocess_mode="max",
        )
        self.job_rows_per_second = Gauge(
            "infergate_job_rows_per_second",
            "Rows per second of all running batch jobs together",
            registry=r,
            multiprocess_mode="max",
        )
        self.job_rows = Counter(
            "infergate_job_rows",
            "Batch-job rows committed (a chunk's rows count once, by the attempt that "
            "completed it): ok or failed",
            ["model", "outcome"],
            registry=r,
        )
        self.job_chunks = Counter(
            "infergate_job_chunks",
            "Batch-job chunk attempts by outcome: done, retried, deferred, skipped, failed, "
            "lost_race (another attempt completed it first)",
            ["outcome"],
            registry=r,
        )
        self.job_chunk_time = Histogram(
            "infergate_job_chunk_seconds",
            "Time of one batch-job chunk attempt",
            ["model"],
            buckets=CHUNK_BUCKETS,
            registry=r,
        )
        self.job_upload_bytes = Counter(
            "infergate_job_upload_bytes",
            "Bytes of batch-job input files received",
            registry=r,
        )
        self.job_uploads = Counter(
            "infergate_job_uploads",
            "Batch-job submissions by outcome: accepted, too_large, unsupported, invalid, aborted",
            ["outcome"],
            registry=r,
        )
        self.job_dispatch_failures = Counter(
            "infergate_job_dispatch_failures",
            "Batch-job work items the broker did not take (the reconciler sends them again)",
            registry=r,
        )

        # Notifications (frontend/notify/): the outbox's deliveries and its backlog.
        self.notify_deliveries = Counter(
            "infergate_notify_deliveries",
            "Notification deliveries that ended, by channel (webhook, callback, email) and "
            "outcome (delivered, failed, skipped)",
            ["channel", "outcome"],
            registry=r,
        )
        self.notify_attempts = Counter(
            "infergate_notify_attempts",
            "Notification delivery attempts by channel and result (ok, retry, refused, last)",
            ["channel", "result"],
            registry=r,
        )
        self.notify_latency = Histogram(
            "infergate_notify_delivery_seconds",
            "From the event (the job's state change) to its delivery",
            ["channel"],
            buckets=NOTIFY_BUCKETS,
            registry=r,
        )
        self.notify_backlog = Gauge(
            "infergate_notify_outbox_due",
            "Deliveries due and not yet sent, as the database holds them",
            registry=r,
            multiprocess_mode="max",
        )
        self.notify_oldest = Gauge(
            "infergate_notify_outbox_oldest_seconds",
            "How long the oldest due delivery has waited (0: none waits)",
            registry=r,
            multiprocess_mode="max",
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
