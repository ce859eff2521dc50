"""Routing across real worker processes sharing a private Redis: an admin change reaches
every worker within a second, and sticky assignments agree between workers, with the
assignment computed offline, and after a restart. Real Triton answers."""

from __future__ import annotations

import time

import httpx
import pytest

from frontend.auth.secrets import derive
from frontend.routing.assign import Assigner
from frontend.routing.config import Experiment
from frontend.settings import DEV_SECRET

from .conftest import ADMIN, RedisServer
from .test_access_redis import Workers

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/intent/predict"
EXPERIMENT = {
    "name": "lr-vs-svc",
    "variants": {"lr": {"version": "1", "weight": 50}, "svc": {"version": "2", "weight": 50}},
}


def version_for(url: str, subject: str) -> str:
    r = httpx.post(
        url + PREDICT,
        json={"inputs": "please book a table"},
        headers={**ADMIN, "X-User-Id": subject, "Cache-Control": "no-cache"},
        timeout=30,
    )  # a new connection each time: either worker may answer
    assert r.status_code == 200, r.text
    return r.headers["X-Model-Version"]


def test_admin_change_reaches_every_worker_within_a_second_and_stays_sticky(
    triton, repository, tmp_path
):
    (tmp_path / "r").mkdir()
    (tmp_path / "again").mkdir()
    redis = RedisServer(tmp_path / "r").start()
    workers = Workers(triton, repository, redis, tmp_path)
    expected_of = Assigner(derive(DEV_SECRET, "routing"))
    experiment = Experiment.model_validate(EXPERIMENT)
    subjects = [f"customer-{i}" for i in range(40)]
    expected = {
        s: experiment.variants[expected_of.variant("intent", experiment, "ext:" + s)].version
        for s in subjects
    }
    assert set(expected.values()) == {"1", "2"}
    try:
        # Before: everyone on the default (2).
        assert {version_for(workers.url, s) for s in subjects[:10]} == {"2"}
        r = httpx.put(
            workers.url + "/v1/admin/routing/intent",
            json={"experiment": EXPERIMENT},
            headers=ADMIN,
            timeout=30,
        )
        assert r.status_code == 200
        changed_at = time.monotonic()
        # Every request made 1 s after the change, whichever worker takes it, follows it.
        last_wrong = changed_at
        while time.monotonic() - changed_at < 2.0:
            s = subjects[int((time.monotonic() * 1000) % len(subjects))]
            if version_for(workers.url, s) != expected[s]:
                last_wrong = time.monotonic()
        print(f"last stale answer {last_wrong - changed_at:.2f}s after the change")
        assert last_wrong - changed_at < 1.0
        # Sticky: each subject, asked three times on new connections, gets its variant.
        for s in subjects:
            assert [version_for(workers.url, s) for _ in range(3)] == [expected[s]] * 3
        # After a restart of every worker, the same assignment.
        workers.stop()
        workers = Workers(triton, repository, redis, tmp_path / "again")
        assert {s: version_for(workers.url, s) for s in subjects} == expected
        listed = httpx.get(workers.url + "/v1/admin/routing/intent", headers=ADMIN).json()
        assert listed["experiment"]["name"] == "lr-vs-svc"  # kept in Redis over the restart
    finally:
        workers.stop()
        redis.kill()
