"""Batch-job settings (design §7): defaults, bounds, the timing rules between them, their
environment names, the broker URL kept secret, and the tiers' job limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from frontend.db.startup import EMBEDDED_URL
from frontend.settings import JobSettings, ServerSettings, Settings, Tier

MIB = 1 << 20


@pytest.fixture
def clean_env(monkeypatch):
    """No INFERGATE_ variable of the calling environment leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("INFERGATE_"):
            monkeypatch.delenv(name)
    return monkeypatch


# The design's table, value for value.
DEFAULTS = {
    "executor": "auto",
    "broker_url": None,
    "queue": "infergate.jobs",
    "storage_dir": Path(".infergate/jobs"),
    "max_file_bytes": 500 * MIB,
    "max_files": 8,
    "max_inline_rows": 10_000,
    "max_inline_body_bytes": 8 * MIB,
    "chunk_rows": 256,
    "generation_chunk_rows": 8,
    "generation_rows_in_flight": 2,
    "triton_batch_rows": 32,
    "triton_requests_in_flight": 1,
    "yield_factor": 50.0,
    "contention_ratio": 1.5,
    "triton_priority": 2,
    "chunks_in_flight_per_job": 4,
    "local_slots": 1,
    "worker_concurrency": 1,
    "lease_s": 30,
    "reconcile_s": 5,
    "redispatch_s": 60,
    "chunk_timeout_s": 300,
    "visibility_timeout_s": 900,
    "max_chunk_attempts": 20,
    "dispatch_timeout_s": 2.0,
    "retention_s": 604_800,
    "sweep_s": 300,
    "tmp_max_age_s": 7200,
    "idempotency_ttl_s": 86_400,
    "idempotency_stale_s": 3900,
    "events_per_s": 2.0,
    "events_keepalive_s": 15.0,
    "busy_retry_after_s": 30,
    "min_free_bytes": 1 << 30,
    "shutdown_grace_s": 5.0,
    "fsync": True,
    "worker_metrics_port": 0,
}


def test_defaults_are_the_designs():
    jobs = Settings().jobs
    assert jobs.model_dump() == DEFAULTS
    assert set(JobSettings.model_fields) == set(DEFAULTS)


def test_every_job_setting_says_what_it_is():
    missing = [n for n, f in JobSettings.model_fields.items() if not f.description]
    assert missing == []


def test_storage_sits_beside_the_embedded_database():
    embedded = Path(EMBEDDED_URL.split(":///", 1)[1])
    assert JobSettings().storage_dir.parent == embedded.parent


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("EXECUTOR", "off", "executor", "off"),
        ("CHUNK_ROWS", "512", "chunk_rows", 512),
        ("MAX_FILE_BYTES", str(2 << 30), "max_file_bytes", 2 << 30),
        ("STORAGE_DIR", "/srv/jobs", "storage_dir", Path("/srv/jobs")),
        ("FSYNC", "false", "fsync", False),
        ("TRITON_PRIORITY", "3", "triton_priority", 3),
        ("QUEUE", "batch.low", "queue", "batch.low"),
    ],
)
def test_environment_names(clean_env, name, value, attribute, expected):
    clean_env.setenv(f"INFERGATE_JOBS__{name}", value)
    assert getattr(Settings().jobs, attribute) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXECUTOR", "threads"),
        ("MAX_FILE_BYTES", "1023"),
        ("MAX_FILE_BYTES", str((64 << 30) + 1)),
        ("MAX_FILES", "0"),
        ("MAX_FILES", "65"),
        ("CHUNK_ROWS", "0"),
        ("CHUNK_ROWS", "4097"),
        ("TRITON_BATCH_ROWS", "257"),
        ("TRITON_PRIORITY", "11"),
        ("TRITON_PRIORITY", "-1"),
        ("LEASE_S", "0"),
        ("RECONCILE_S", "0"),
        ("RETENTION_S", "59"),
        ("EVENTS_PER_S", "0"),
        ("WORKER_METRICS_PORT", "65536"),
        ("QUEUE", ""),
        ("QUEUE", "has space"),
        ("BROKER_URL", "http://broker:80"),
        ("EXECUTOR", "celery"),  # without a broker
    ],
)
def test_nonsense_is_refused(clean_env, name, value):
    clean_env.setenv(f"INFERGATE_JOBS__{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_the_visibility_timeout_outlasts_the_longest_chunk():
    with pytest.raises(ValidationError, match="visibility_timeout_s must be above"):
        JobSettings(chunk_timeout_s=300, visibility_timeout_s=360)
    assert JobSettings(chunk_timeout_s=300, visibility_timeout_s=361).visibility_timeout_s == 361
    with pytest.raises(ValidationError, match="visibility_timeout_s"):
        JobSettings(chunk_timeout_s=900)  # the default visibility (900) no longer covers it
    JobSettings(chunk_timeout_s=900, visibility_timeout_s=1000, tmp_max_age_s=7200)


def test_temporary_files_and_claims_outlive_what_writes_them():
    with pytest.raises(ValidationError, match=re.escape("tmp_max_age_s must be above jobs.chunk")):
        JobSettings(chunk_timeout_s=600, visibility_timeout_s=900, tmp_max_age_s=600)
    for name in ("tmp_max_age_s", "idempotency_stale_s"):
        why = re.escape(f"jobs.{name} must be above server.upload_timeout_s")
        with pytest.raises(ValidationError, match=why):
            Settings(jobs=JobSettings(**{name: 3600}))
    # A shorter upload deadline lets both come down with it.
    short = Settings(
        server=ServerSettings(upload_timeout_s=600),
        jobs=JobSettings(tmp_max_age_s=900, idempotency_stale_s=900),
    )
    assert short.jobs.tmp_max_age_s == 900


def test_the_broker_url_is_never_shown(clean_env):
    url = "redis://:hunter2-broker-password@broker:6379/1"
    clean_env.setenv("INFERGATE_JOBS__BROKER_URL", url)
    settings = Settings()
    assert settings.jobs.broker_url is not None
    assert settings.jobs.broker_url.get_secret_value() == url
    for shown in (repr(settings), str(settings.jobs), settings.model_dump_json()):
        assert "hunter2" not in shown
    clean_env.setenv("INFERGATE_JOBS__BROKER_URL", "https://user:hunter2@broker/1")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "hunter2" not in str(refused.value)  # a refused value is not echoed either
    assert "jobs.broker_url must start with" in str(refused.value)


@pytest.mark.parametrize(
    "url", ["redis://b:6379/1", "rediss://b/1", "amqp://u:p@b//", "amqps://b", "pyamqp://b"]
)
def test_brokers_celery_speaks(url):
    assert JobSettings(broker_url=url, executor="celery").broker_url is not None


def test_tiers_carry_the_job_limits():
    tiers = Settings().auth.tiers
    limits = {n: (t.job_rows_per_day, t.max_concurrent_jobs) for n, t in tiers.items()}
    assert limits == {
        "free": (10_000, 1),
        "pro": (1_000_000, 4),
        "enterprise": (50_000_000, 16),
        "unlimited": (None, None),
    }
    assert Tier().job_rows_per_day is None and Tier().max_concurrent_jobs is None
    with pytest.raises(ValidationError):
        Tier(job_rows_per_day=-1)
    with pytest.raises(ValidationError):
        Tier(max_concurrent_jobs=100_001)


def test_tier_job_limits_from_the_environment(clean_env):
    clean_env.setenv(
        "INFERGATE_AUTH__TIERS",
        '{"free": {"rate": ["5/minute"], "job_rows_per_day": 50, "max_concurrent_jobs": 2},'
        ' "unlimited": {}}',
    )
    free = Settings().auth.tiers["free"]
    assert (free.job_rows_per_day, free.max_concurrent_jobs) == (50, 2)


def test_upload_deadlines(clean_env):
    server = Settings().server
    assert (server.upload_window_s, server.upload_min_bytes_per_window) == (15, 65_536)
    assert server.upload_timeout_s == 3600
    clean_env.setenv("INFERGATE_SERVER__UPLOAD_WINDOW_S", "30")
    assert Settings().server.upload_window_s == 30
    for name, value in (("UPLOAD_WINDOW_S", "0"), ("UPLOAD_MIN_BYTES_PER_WINDOW", "0")):
        clean_env.setenv(f"INFERGATE_SERVER__{name}", value)
        with pytest.raises(ValidationError):
            Settings()
        clean_env.delenv(f"INFERGATE_SERVER__{name}")
