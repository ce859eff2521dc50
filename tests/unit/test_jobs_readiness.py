"""Readiness reports the job broker when jobs run on Celery: up, or down without taking
the replica out (jobs are still accepted into SQL; the reconciler sends their work once
the broker is back). With the in-process executor there is no broker to report."""

from __future__ import annotations

from frontend.jobs.celery_app import make_celery
from frontend.jobs.celery_dispatch import CeleryDispatcher
from frontend.settings import Settings

from .job_app import job_app


class FakeBrokerRedis:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if not self.up:
            raise ConnectionError("broker away")
        return True

    async def aclose(self) -> None:
        return None


def _celery(redis: FakeBrokerRedis):
    def make(settings: Settings) -> CeleryDispatcher:
        return CeleryDispatcher(make_celery(settings), settings.jobs, redis=redis)

    return make


def test_readiness_reports_the_broker_up_and_down_but_never_requires_it(tmp_path):
    broker = FakeBrokerRedis(up=True)
    with job_app(
        tmp_path,
        executor="celery",
        broker_url="redis://127.0.0.1:9/1",
        dispatcher=_celery(broker),
    ) as app:
        ready = app.client.get("/health/ready", headers={})
        assert ready.status_code == 200, ready.text
        component = ready.json()["components"]["broker"]
        assert (component["status"], component["required"]) == ("up", False)
        assert ready.json()["status"] == "ready"

        broker.up = False
        app.services.readiness._answer = None  # the cached ready answer
        ready = app.client.get("/health/ready", headers={})
        assert ready.status_code == 200, ready.text
        component = ready.json()["components"]["broker"]
        assert (component["status"], component["detail"]) == ("down", "ConnectionError")
        assert ready.json()["status"] == "degraded"
        assert broker.pings == 2

        # Accepted all the same: the work is in SQL.
        r = app.submit({"model": "intent", "inputs": ["hello"]})
        assert r.status_code == 201, r.text


def test_without_celery_no_broker_is_reported(tmp_path):
    with job_app(tmp_path) as app:
        ready = app.client.get("/health/ready", headers={})
        assert ready.status_code == 200
        assert "broker" not in ready.json()["components"]
