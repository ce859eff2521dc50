"""Routing across real worker processes sharing a private Redis and one database: an admin
change reaches every worker at its next poll (stored in SQL, announced through Redis),
and sticky assignments agree between workers, with the assignment computed offline, and
after a restart. Real Triton answers."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest

from benchmarks.inputs import TEXTS

from .conftest import ADMIN, TEST_SECRET, LiveFrontend, RedisServer, frontend_settings
from .test_access_redis import Workers
from .test_cache import triton_counter

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/intent/predict"
CONVERGE_WINDOW_S = 12.0  # a hang bound for the change to reach both workers
EXPERIMENT = {
    "name": "lr-vs-svc",
    "variants": {"lr": {"version": "1", "weight": 50}, "svc": {"version": "2", "weight": 50}},
}


@pytest.fixture
def cached_frontend(triton, repository, tmp_path):
    from frontend.app import create_app

    redis = RedisServer(tmp_path).start()
    live = LiveFrontend(create_app(frontend_settings(triton.grpc_url, repository, redis.url)))
    with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as http:
        yield http
    live.stop()
    redis.kill()


def reference_version(model: str, experiment: dict, subject: str) -> str:
    """The documented assignment, written out independently of frontend.routing: a bucket
    in [0, 1) from HMAC-SHA256 (key: HMAC of "infergate:routing" under the server secret)
    of model, "experiment", name and subject joined by 0x1f; variants by name, cumulative
    weights."""
    key = hmac.new(TEST_SECRET.encode(), b"infergate:routing", hashlib.sha256).digest()
    message = "\x1f".join([model, "experiment", experiment["name"], subject]).encode()
    point = int.from_bytes(hmac.new(key, message, hashlib.sha256).digest()[:8], "big") / 2**64
    variants = sorted(experiment["variants"].items())
    total = sum(v["weight"] for _, v in variants)
    edge = 0.0
    for _, variant in variants:
        edge += variant["weight"] / total
        if point < edge:
            return str(variant["version"])
    return str(variants[-1][1]["version"])


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
    subjects = [f"customer-{i}" for i in range(40)]
    expected = {s: reference_version("intent", EXPERIMENT, "ext:" + s) for s in subjects}
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
        # Every answer after the last stale one follows the change, whichever worker
        # takes it; the stale ones end well inside the window. The window is a hang
        # bound: "within a second" is the poll's mechanism and its default, held by the
        # unit tests; the time is printed (a loaded machine stretches it).
        last_wrong = changed_at
        answers = 0
        while time.monotonic() - changed_at < CONVERGE_WINDOW_S:
            s = subjects[int((time.monotonic() * 1000) % len(subjects))]
            answers += 1
            if version_for(workers.url, s) != expected[s]:
                last_wrong = time.monotonic()
            elif time.monotonic() - last_wrong > 2.0 and answers > 40:
                break  # right for 2 s on new connections to either worker: converged
        print(f"last stale answer {last_wrong - changed_at:.2f}s after the change")
        assert last_wrong - changed_at < CONVERGE_WINDOW_S - 2.0
        # Sticky: each subject, asked three times on new connections, gets its variant.
        for s in subjects:
            assert [version_for(workers.url, s) for _ in range(3)] == [expected[s]] * 3
        # After a restart of every worker, the same assignment.
        workers.stop()
        workers = Workers(triton, repository, redis, tmp_path / "again")
        assert {s: version_for(workers.url, s) for s in subjects} == expected
        listed = httpx.get(workers.url + "/v1/admin/routing/intent", headers=ADMIN).json()
        assert listed["experiment"]["name"] == "lr-vs-svc"  # kept in SQL over the restart
    finally:
        workers.stop()
        redis.kill()


def test_versions_status_and_shadow_on_the_real_stack(cached_frontend, triton):
    """Deprecated / retired answers from real Triton, and the shadow comparison of intent
    v1 (logistic regression) against v2 (linear SVC) on real texts."""
    http = cached_frontend
    r = http.put(
        "/v1/admin/routing/intent",
        json={
            "default": "2",
            "versions": {"1": {"status": "deprecated", "sunset": "Sat, 01 May 2027 00:00:00 GMT"}},
        },
    )
    assert r.status_code == 200
    old = http.post("/v1/models/intent/versions/1/predict", json={"inputs": "book a flight"})
    assert old.status_code == 200 and old.json()["version"] == "1"
    assert old.headers["Deprecation"] == "true" and old.headers["Sunset"].startswith("Sat")
    assert 'versions/2/predict>; rel="successor-version"' in old.headers["Link"]

    r = http.put(
        "/v1/admin/routing/intent",
        json={"default": "2", "versions": {"1": {"status": "retired", "replacement": "2"}}},
    )
    gone = http.post(PREDICT, json={"inputs": "book a flight"}, headers={"X-Model-Version": "1"})
    assert gone.status_code == 410 and gone.json()["error"]["details"]["replacement"] == "2"

    before = triton_counter(triton, "nv_inference_request_success", "intent", "2")
    http.put(
        "/v1/admin/routing/intent",
        json={
            "default": "1",
            "experiment": {
                "name": "shadow-check",
                "variants": {
                    "a": {"version": "1", "weight": 1},
                    "b": {"version": "1", "weight": 1},
                },
            },
            "shadow": {"version": "2", "percent": 100},
        },
    )
    texts = [f"{t} please" for t in TEXTS]
    for i, text in enumerate(texts):
        r = http.post(PREDICT, json={"inputs": text}, headers={"X-User-Id": f"s{i}"})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        summary = http.get("/v1/admin/experiments/shadow-check").json()
        if summary["shadow"]["items_compared"] >= len(texts):
            break
        time.sleep(0.1)
    shadow = summary["shadow"]
    print(f"shadow v2 vs v1: {shadow}")
    assert shadow["items_compared"] == len(texts) and shadow["errors"] == 0
    assert 0.5 <= shadow["agreement_rate"] <= 1.0  # two heads on one encoder mostly agree
    assert triton_counter(triton, "nv_inference_request_success", "intent", "2") - before >= len(
        texts
    )
    assert sum(v["requests"] for v in summary["variants"].values()) == len(texts)
    http.delete("/v1/admin/routing/intent")
