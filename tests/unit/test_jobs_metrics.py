"""The batch-job metrics (design §7) exist under their documented names (nothing updates
them yet: the reconciler, runner and upload do, in their own work packages)."""

from __future__ import annotations

from frontend.observability.metrics import Metrics

EXPORTED = [
    'infergate_jobs{state="running"} 2.0',
    'infergate_job_queue_depth{where="sql"} 7.0',
    "infergate_job_rows_per_second 120.5",
    'infergate_job_rows_total{model="intent",outcome="ok"} 256.0',
    'infergate_job_chunks_total{outcome="lost_race"} 1.0',
    'infergate_job_chunk_seconds_bucket{le="120.0",model="intent"} 1.0',
    "infergate_job_upload_bytes_total 1024.0",
    'infergate_job_uploads_total{outcome="accepted"} 1.0',
]


def test_job_metrics_render_under_their_names():
    m = Metrics()
    m.jobs.labels(state="running").set(2)
    m.job_queue_depth.labels(where="sql").set(7)
    m.job_rows_per_second.set(120.5)
    m.job_rows.labels(model="intent", outcome="ok").inc(256)
    m.job_chunks.labels(outcome="lost_race").inc()
    m.job_chunk_time.labels(model="intent").observe(1.5)
    m.job_upload_bytes.inc(1024)
    m.job_uploads.labels(outcome="accepted").inc()
    text = m.render().decode()
    assert [line for line in EXPORTED if line not in text.splitlines()] == []


def test_sql_derived_gauges_take_the_max_across_processes():
    """Every process reads the same rows: summing their gauges would multiply the count."""
    m = Metrics()
    for gauge in (m.jobs, m.job_queue_depth, m.job_rows_per_second):
        assert gauge._multiprocess_mode == "max"
