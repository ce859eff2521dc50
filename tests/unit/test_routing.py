"""Routing: sticky assignment statistics, rollout monotonicity, configuration checks, and
the behaviour through the app with a fake Triton (headers, 410, explicit versions,
trusted subjects, experiment summary, shadow)."""

from __future__ import annotations

import time

import pytest

from frontend.routing.assign import Assigner
from frontend.routing.config import Experiment, ModelRouting, Rollout, Variant

from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client

SUBJECTS = [f"user:{i:05d}" for i in range(10_000)]


def test_experiment_shares_within_two_percent_of_weights():
    experiment = Experiment(
        name="exp",
        variants={
            "a": Variant(version="1", weight=50),
            "b": Variant(version="2", weight=30),
            "c": Variant(version="1", weight=20),
        },
    )
    assigner = Assigner(b"k" * 32)
    counts = {"a": 0, "b": 0, "c": 0}
    for subject in SUBJECTS:
        counts[assigner.variant("intent", experiment, subject)] += 1
    shares = [counts[n] / len(SUBJECTS) for n in "abc"]
    for share, weight in zip(shares, (0.5, 0.3, 0.2), strict=True):
        assert abs(share - weight) <= 0.02, shares


def test_assignment_is_sticky_keyed_and_not_pythons_hash():
    experiment = Experiment(
        name="exp",
        variants={"a": Variant(version="1", weight=1), "b": Variant(version="2", weight=1)},
    )
    first, again = Assigner(b"k" * 32), Assigner(b"k" * 32)  # a restart, another worker
    other_key = Assigner(b"z" * 32)
    same = [first.variant("intent", experiment, s) for s in SUBJECTS[:2000]]
    assert same == [again.variant("intent", experiment, s) for s in SUBJECTS[:2000]]
    moved = sum(
        a != other_key.variant("intent", experiment, s)
        for a, s in zip(same, SUBJECTS[:2000], strict=True)
    )
    assert 800 < moved < 1200  # another secret: an unrelated assignment


def test_raising_a_rollout_only_moves_subjects_into_the_canary():
    assigner = Assigner(b"k" * 32)

    def canary(percent: float) -> set[str]:
        rollout = Rollout(version="2", percent=percent)
        return {s for s in SUBJECTS if assigner.in_rollout("intent", rollout, s)}

    at10, at20 = canary(10), canary(20)
    assert at10 < at20  # a strict subset: nobody left the canary
    assert abs(len(at10) / len(SUBJECTS) - 0.10) <= 0.02
    assert abs(len(at20) / len(SUBJECTS) - 0.20) <= 0.02
    rollout = Rollout(version="2", percent=0, allow=["user:00001"], block=[])
    assert assigner.in_rollout("intent", rollout, "user:00001")
    blocked = next(iter(at20))
    assert not assigner.in_rollout(
        "intent", Rollout(version="2", percent=100, block=[blocked]), blocked
    )


def test_configuration_is_checked_against_the_catalog():
    served = ["1", "2"]
    assert ModelRouting().check("intent", served).default == "2"
    assert ModelRouting(versions={"2": {"status": "canary"}}).check("intent", served).default == "1"
    with pytest.raises(ValueError, match="not served"):
        ModelRouting(versions={"9": {"status": "stable"}}).check("intent", served)
    with pytest.raises(ValueError, match="not servable"):
        ModelRouting(default="1", versions={"1": {"status": "retired"}}).check("intent", served)
    with pytest.raises(ValueError, match="not servable"):
        ModelRouting(rollout={"version": "3", "percent": 5}).check("intent", served)
    with pytest.raises(ValueError):
        Experiment(name="x", variants={"a": Variant(version="1", weight=1)})  # one variant


@pytest.fixture
def api(tmp_path):
    fake = FakeTriton()
    client = _client(tmp_path, fake)
    yield client, fake
    client.__exit__(None, None, None)


PREDICT = "/v1/models/intent/predict"


def put(client, model: str, routing: dict):
    r = client.put(f"/v1/admin/routing/{model}", json=routing)
    assert r.status_code == 200, r.text
    return r.json()


def test_deprecated_and_retired_versions(api):
    client, _ = api
    put(
        client,
        "intent",
        {
            "default": "2",
            "versions": {
                "1": {"status": "deprecated", "sunset": "Sat, 01 May 2027 00:00:00 GMT"},
                "2": {"status": "stable"},
            },
        },
    )
    r = client.post("/v1/models/intent/versions/1/predict", json={"inputs": "hi"})
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    assert r.headers["Deprecation"] == "true"
    assert r.headers["Sunset"] == "Sat, 01 May 2027 00:00:00 GMT"
    assert r.headers["Link"] == '</v1/models/intent/versions/2/predict>; rel="successor-version"'
    assert "Deprecation" not in client.post(PREDICT, json={"inputs": "hi"}).headers

    put(
        client,
        "intent",
        {"default": "2", "versions": {"1": {"status": "retired", "replacement": "2"}}},
    )
    gone = client.post(PREDICT, json={"inputs": "hi"}, headers={"X-Model-Version": "1"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "version_retired"
    assert gone.json()["error"]["details"] == {"replacement": "2"}
    assert "use version 2" in gone.json()["error"]["message"]
    info = client.get("/v1/models/intent").json()
    assert info["default_version"] == "2"
    assert {v["version"]: v["routing_status"] for v in info["versions"]} == {
        "1": "retired",
        "2": "stable",
    }


def test_explicit_version_wins_over_the_experiment(api):
    client, fake = api
    put(
        client,
        "intent",
        {
            "experiment": {
                "name": "e1",
                "variants": {
                    "a": {"version": "2", "weight": 1},
                    "b": {"version": "2", "weight": 1},
                },
            }
        },
    )
    assert client.post(PREDICT, json={"inputs": "x"}).headers["X-Model-Version"] == "2"
    explicit = client.post(PREDICT, json={"inputs": "x"}, headers={"X-Model-Version": "1"})
    assert explicit.headers["X-Model-Version"] == "1"
    assert fake.calls[-1][1] == "1"


def test_x_user_id_is_the_subject_only_for_trusted_callers(api):
    client, _ = api
    put(
        client,
        "intent",
        {"rollout": {"version": "2", "percent": 0, "allow": ["ext:vip"]}, "default": "1"},
    )
    # The admin key is trusted: X-User-Id names the subject, the allowlist applies.
    assert (
        client.post(PREDICT, json={"inputs": "x"}, headers={"X-User-Id": "vip"}).headers[
            "X-Model-Version"
        ]
        == "2"
    )
    user_key = client.post("/v1/admin/keys", json={"name": "u", "tier": "pro"}).json()["key"]
    r = client.post(
        PREDICT, json={"inputs": "x"}, headers={"X-API-Key": user_key, "X-User-Id": "vip"}
    )
    assert r.headers["X-Model-Version"] == "1"  # a user cannot pick their bucket


def test_invalid_routing_is_422_and_unknown_model_404(api):
    client, _ = api
    bad = client.put("/v1/admin/routing/intent", json={"rollout": {"version": "7", "percent": 5}})
    assert bad.status_code == 409 and "not servable" in bad.json()["error"]["message"]
    assert client.put("/v1/admin/routing/nope", json={}).status_code == 404
    reset = client.delete("/v1/admin/routing/intent")
    assert reset.status_code == 200 and reset.json()["default"] == "2"


def test_experiment_summary_and_shadow(api):
    client, fake = api
    put(
        client,
        "intent",
        {
            "experiment": {
                "name": "lr-vs-svc",
                "variants": {
                    "lr": {"version": "1", "weight": 1},
                    "svc": {"version": "2", "weight": 1},
                },
            },
            "shadow": {"version": "2", "percent": 100},
        },
    )
    for i in range(40):
        r = client.post(
            PREDICT,
            json={"inputs": [f"t{i}", f"u{i}"]},
            headers={"X-User-Id": f"s{i}", "Cache-Control": "no-cache"},
        )
        assert r.status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        summary = client.get("/v1/admin/experiments/lr-vs-svc").json()
        counted = sum(v["requests"] for v in summary["variants"].values())
        if counted == 40 and summary["shadow"]["items_compared"] >= 2:
            break
        time.sleep(0.05)
    assert summary["active"] and summary["model"] == "intent"
    lr, svc = summary["variants"]["lr"], summary["variants"]["svc"]
    assert lr["requests"] + svc["requests"] == 40 and lr["requests"] > 5 and svc["requests"] > 5
    assert lr["version"] == "1" and lr["weight"] == 1
    assert lr["labels"] == {"greeting": 2 * lr["requests"]}
    assert lr["error_rate"] == 0 and lr["p50_ms"] is not None and lr["p95_ms"] >= lr["p50_ms"]
    # Shadow: only the requests whose primary was version 1 are mirrored to version 2.
    shadowed = [c for c in fake.calls if c[1] == "2"]
    assert len(shadowed) >= svc["requests"] + 1
    assert summary["shadow"]["agreement_rate"] == 1.0  # the fake always says "greeting"
    metrics = client.get("/metrics").text
    assert (
        'infergate_variant_requests_total{model="intent",outcome="ok",policy="experiment"'
        in metrics
    )
    assert "infergate_shadow_items_total" in metrics
    assert client.get("/v1/admin/experiments/none").status_code == 404


def test_the_example_routing_file_loads_and_routes(tmp_path):
    from pathlib import Path

    from frontend.settings import AuthSettings, RoutingSettings

    example = Path(__file__).resolve().parents[2] / "examples" / "routing.json"
    fake = FakeTriton()
    client = _client(
        tmp_path,
        fake,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
        routing=RoutingSettings(file=example),
    )
    table = client.get("/v1/admin/routing").json()["models"]
    assert table["intent"]["rollout"]["percent"] == 10 and table["intent"]["default"] == "1"
    versions = {
        client.post(PREDICT, json={"inputs": "x"}, headers={"X-User-Id": f"u{i}"}).headers[
            "X-Model-Version"
        ]
        for i in range(60)
    }
    assert versions == {"1", "2"}  # ~10 % of subjects on the canary
    client.__exit__(None, None, None)
