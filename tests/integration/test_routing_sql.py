"""Routing kept in SQL, on each engine (a SQLite file, a PostgreSQL database): two
frontends (two workers) over one database and one Redis; a change made on one is applied
by the other (at its next poll, every 0.5 s: the unit tests hold that mechanism and the
default; here the wait is bounded only against a hang and the time is printed, as a
loaded machine stretches it); Redis flushed loses nothing (the routing is in SQL, Redis
only carries the announcement); the history and the audit log through HTTP, cache purges
included. Real Triton answers the predictions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import ADMIN, LiveFrontend, RedisServer, frontend_settings

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/intent/predict"
APPLIED_WITHIN_S = 10.0  # a hang bound, not the claim (see the docstring)
ALL_ON_1 = {  # certain outcome: both variants on version 1
    "name": "sql-all-on-1",
    "variants": {"a": {"version": "1", "weight": 1}, "b": {"version": "1", "weight": 1}},
}


@contextlib.contextmanager
def workers(
    triton, repository, redis_url: str, database_url: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two frontends, each with its own engine and Redis connections, as two workers."""
    from frontend.app import create_app
    from frontend.settings import DatabaseSettings

    def settings():
        base = frontend_settings(triton.grpc_url, repository, redis_url)
        return base.model_copy(update={"database": DatabaseSettings(url=database_url)})

    first = LiveFrontend(create_app(settings()))
    second = LiveFrontend(create_app(settings()))
    try:
        with (
            httpx.Client(base_url=first.url, timeout=60, headers=ADMIN) as a,
            httpx.Client(base_url=second.url, timeout=60, headers=ADMIN) as b,
        ):
            yield a, b
    finally:
        first.stop()
        second.stop()


def served_version(http: httpx.Client) -> str:
    r = http.post(
        PREDICT, json={"inputs": "book a table for two"}, headers={"Cache-Control": "no-cache"}
    )
    assert r.status_code == 200, r.text
    return r.headers["X-Model-Version"]


def wait_for_routing(http: httpx.Client, wanted: dict, within_s: float) -> float:
    """Seconds until `http`'s routing of intent has the fields of `wanted` (fails after
    `within_s`)."""
    started = time.monotonic()
    while True:
        seen = http.get("/v1/admin/routing/intent").json()
        elapsed = time.monotonic() - started
        if all(seen.get(k) == v for k, v in wanted.items()):
            return elapsed
        assert elapsed < within_s, f"still {seen} after {elapsed:.2f}s"
        time.sleep(0.02)


def test_a_change_on_one_worker_is_applied_by_the_other_within_a_second(
    triton, repository, redis_server, database_url
):
    with workers(triton, repository, redis_server.url, database_url) as (a, b):
        assert served_version(b) == "2"  # the defaults: the highest version
        r = a.put("/v1/admin/routing/intent", json={"default": "1"})
        assert r.status_code == 200 and r.json()["default"] == "1"
        elapsed = wait_for_routing(b, {"default": "1"}, within_s=APPLIED_WITHIN_S)
        print(f"applied by the other worker {elapsed:.2f}s after the change")
        assert served_version(b) == "1" and served_version(a) == "1"
        # And back, the other way round.
        assert b.delete("/v1/admin/routing/intent").status_code == 200
        wait_for_routing(a, {"default": "2"}, within_s=APPLIED_WITHIN_S)
        assert served_version(a) == "2"


def test_redis_flushed_loses_no_routing_over_a_restart(triton, repository, tmp_path, database_url):
    redis = RedisServer(tmp_path).start()  # private: FLUSHALL must not touch other tests
    try:
        with workers(triton, repository, redis.url, database_url) as (a, b):
            r = a.put("/v1/admin/routing/intent", json={"default": "2", "experiment": ALL_ON_1})
            assert r.status_code == 200
            wait_for_routing(b, {"experiment": ALL_ON_1}, within_s=APPLIED_WITHIN_S)
            assert served_version(b) == "1"  # the experiment applies on the other worker
            assert redis.client().flushall()
            # Still serving it after the flush (the reloads read SQL, which still has it).
            name = b.get("/v1/admin/routing/intent").json()["experiment"]["name"]
            assert name == ALL_ON_1["name"] and served_version(a) == "1"
            # A change after the flush still reaches the other worker.
            r = a.put("/v1/admin/routing/intent", json={"default": "1", "experiment": ALL_ON_1})
            assert r.status_code == 200
            wait_for_routing(b, {"default": "1", "experiment": ALL_ON_1}, within_s=APPLIED_WITHIN_S)
        redis.client().flushall()  # and again while nothing runs
        with workers(triton, repository, redis.url, database_url) as (a, b):
            for http in (a, b):
                routing = http.get("/v1/admin/routing/intent").json()
                assert routing["experiment"]["name"] == ALL_ON_1["name"]
                assert served_version(http) == "1"
            assert http.get("/v1/admin/routing/intent").json()["default"] == "1"
            history = a.get("/v1/admin/routing/intent/history").json()["data"]
            assert [h["current"]["default"] for h in history] == ["1", "2"]
            assert history[0]["current"]["experiment"] == ALL_ON_1
    finally:
        redis.kill()


def test_history_and_audit_log_through_http_with_cache_purges(
    triton, repository, redis_server, database_url
):
    with workers(triton, repository, redis_server.url, database_url) as (a, b):
        put = a.put("/v1/admin/routing/intent", json={"default": "1"})
        assert put.status_code == 200
        wait_for_routing(b, {"default": "1"}, within_s=APPLIED_WITHIN_S)
        reset = b.delete("/v1/admin/routing/intent")  # on the other worker
        assert reset.status_code == 200
        purge = a.delete("/v1/admin/cache/intent/versions/1")
        assert purge.status_code == 200

        history = a.get("/v1/admin/routing/intent/history", params={"limit": 1})
        assert history.status_code == 200, history.text
        page = history.json()
        (newest,) = page["data"]
        assert newest["request_id"] == reset.headers["X-Request-ID"]
        assert newest["actor"] == "bootstrap" and newest["current"] is None
        older = a.get(
            "/v1/admin/routing/intent/history", params={"cursor": page["next_cursor"]}
        ).json()
        (oldest,) = older["data"]
        assert older["next_cursor"] is None
        assert oldest["request_id"] == put.headers["X-Request-ID"]
        assert oldest["previous"] is None and oldest["current"]["default"] == "1"
        assert newest["previous"] == oldest["current"]

        entries = b.get("/v1/admin/audit").json()["data"]  # one log, whichever worker
        assert [(e["action"], e["target"], e["request_id"]) for e in entries[:3]] == [
            ("cache.purge", "cache:intent:v1", purge.headers["X-Request-ID"]),
            ("routing.reset", "model:intent", reset.headers["X-Request-ID"]),
            ("routing.update", "model:intent", put.headers["X-Request-ID"]),
        ]
        assert entries[0]["details"] == {"purged": purge.json()["purged"]}
        only = b.get(
            "/v1/admin/audit", params={"action": "routing.update", "target": "model:intent"}
        ).json()["data"]
        assert [e["request_id"] for e in only] == [put.headers["X-Request-ID"]]
        bad = b.get("/v1/admin/audit", params={"from": "not a time"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
