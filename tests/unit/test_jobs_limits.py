"""Job limits per tier (frontend/jobs/limits.py, db.jobs.admit): concurrent jobs and input
rows per UTC day, refused 429 job_limit_exceeded with the rate-limit headers of the day
window and a Retry-After (the next UTC midnight for rows, jobs.busy_retry_after_s for
concurrency); exact under 100 concurrent admissions on a SQLite file."""

from __future__ import annotations

import asyncio
import time

from frontend.db import jobs, migrate
from frontend.db.database import Database
from frontend.db.jobs import Admission
from frontend.jobs import limits
from frontend.jobs.limits import JobLimits
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings

from .job_app import job_app
from .test_frontend_errors import assert_envelope

MIDNIGHT = 1_800_000_000 - 1_800_000_000 % 86_400  # a UTC midnight


def test_seconds_to_midnight():
    assert limits.seconds_to_midnight(MIDNIGHT) == 86_400
    assert limits.seconds_to_midnight(MIDNIGHT + 86_399.5) == 1
    assert limits.seconds_to_midnight(MIDNIGHT + 3600) == 86_400 - 3600


def test_a_refusal_names_the_limit_with_the_day_windows_headers():
    small = JobLimits(rows_per_day=10, concurrent=1)
    rows = Admission(False, 0, 7, MIDNIGHT, 5, "job_rows_per_day", 7, 10)
    refused = limits.refusal(rows, small, "small", MIDNIGHT + 60, busy_retry_after_s=30)
    assert refused.status == 429 and refused.code == "job_limit_exceeded"
    assert refused.details == {
        "limit": "job_rows_per_day",
        "used": 7,
        "limit_value": 10,
        "requested": 5,
        "retry_after_s": 86_400 - 60,
    }
    headers = refused.headers()
    assert headers["Retry-After"] == str(86_400 - 60)
    assert headers["RateLimit-Policy"] == '"small.job_rows.day";q=10;w=86400'
    assert headers["RateLimit"] == f'"small.job_rows.day";r=3;t={86_400 - 60}'
    assert headers["X-RateLimit-Remaining"] == "3"
    busy = Admission(False, 1, 7, MIDNIGHT, 5, "concurrent_jobs", 1, 1)
    refused = limits.refusal(busy, small, "small", MIDNIGHT + 60, busy_retry_after_s=30)
    assert refused.headers()["Retry-After"] == "30" and "concurrent" in refused.message
    too_big = Admission(False, 0, 0, MIDNIGHT, 11, "job_rows_per_day", 0, 10)
    message = limits.refusal(too_big, small, "small", MIDNIGHT, busy_retry_after_s=30).message
    assert "more than the 10 rows a day" in message


def test_a_hundred_concurrent_admissions_admit_exactly_the_limit(tmp_path):
    async def scenario() -> None:
        db = Database(
            f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}",
            DatabaseSettings(deadline_s=30.0, statement_timeout_s=20.0),
            Metrics(),
        )
        await migrate.upgrade(db.engine)
        try:
            three = JobLimits(rows_per_day=None, concurrent=3)

            async def one() -> bool:
                answer = await db.run("admit", lambda s: jobs.admit(s, "acct", 1, three, MIDNIGHT))
                return answer.admitted

            answers = await asyncio.gather(*(one() for _ in range(100)))
            assert sum(answers) == 3
        finally:
            await db.close()

    asyncio.run(scenario())


def test_concurrent_jobs_and_rows_per_day_are_429_with_headers(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        small = app.key("small", tier="small")  # 10 rows a day, one job at a time
        first = app.submit({"model": "intent", "inputs": ["a", "b", "c"]}, key=small)
        assert first.status_code == 201, first.text
        busy = app.submit({"model": "intent", "inputs": ["d"]}, key=small)
        error = assert_envelope(busy, 429, "job_limit_exceeded")
        assert error["details"]["limit"] == "concurrent_jobs"
        assert busy.headers["Retry-After"] == str(app.settings.jobs.busy_retry_after_s)
        assert busy.headers["RateLimit-Policy"] == '"small.job_rows.day";q=10;w=86400'
        # Cancelling gives the slot back; the 3 rows stay counted for today.
        assert (
            app.client.delete(
                f"/v1/jobs/{first.json()['id']}", headers=app.as_key(small)
            ).status_code
            == 202
        )
        over = app.submit({"model": "intent", "inputs": ["x"] * 8}, key=small)
        error = assert_envelope(over, 429, "job_limit_exceeded")
        details = dict(error["details"])
        assert details.pop("retry_after_s") == int(over.headers["Retry-After"])
        assert details == {
            "limit": "job_rows_per_day",
            "used": 3,
            "limit_value": 10,
            "requested": 8,
        }
        assert over.headers["X-RateLimit-Remaining"] == "7"
        to_midnight = limits.seconds_to_midnight(time.time())
        assert abs(int(over.headers["Retry-After"]) - to_midnight) <= 5
        fits = app.submit({"model": "intent", "inputs": ["x"] * 7}, key=small)
        assert fits.status_code == 201, fits.text
        # Others are not limited by this account.
        roomy = app.key("roomy")
        assert app.submit({"model": "intent", "inputs": ["y"] * 20}, key=roomy).status_code == 201
