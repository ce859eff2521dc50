"""Which version answers when several rules apply (docs/routing.md, "Which version
answers"): an explicit version beats everything, the path beats the header, an
experiment beats a rollout, a rollout beats the default; and a bad stored routing
override never stops a worker from serving or from seeing the next good one."""

from __future__ import annotations

import pytest

from frontend.container import services_of
from frontend.routing.router import OVERRIDES

from .test_frontend_errors import FakeTriton, _client

PREDICT = "/v1/models/intent/predict"
# Weights must be > 0: both variants on one version make the outcome certain.
EVERYONE_ON_1 = {
    "name": "all-on-1",
    "variants": {"a": {"version": "1", "weight": 1}, "b": {"version": "1", "weight": 1}},
}


@pytest.fixture
def client(tmp_path):
    client = _client(tmp_path, FakeTriton())
    yield client
    client.__exit__(None, None, None)


def version(client, path: str = PREDICT, **headers: str) -> str:
    r = client.post(path, json={"inputs": "hi"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == r.headers["X-Model-Version"]
    return r.headers["X-Model-Version"]


def put(client, routing: dict) -> None:
    r = client.put("/v1/admin/routing/intent", json=routing)
    assert r.status_code == 200, r.text


def test_rollout_beats_the_default_and_experiment_beats_the_rollout(client):
    assert version(client) == "2"  # the default: the highest served version
    put(client, {"default": "2", "rollout": {"version": "1", "percent": 100}})
    assert version(client) == "1"
    put(
        client,
        {
            "default": "2",
            "rollout": {"version": "1", "percent": 100},
            "experiment": {
                "name": "all-on-2",
                "variants": {
                    "a": {"version": "2", "weight": 1},
                    "b": {"version": "2", "weight": 1},
                },
            },
        },
    )
    assert version(client) == "2"  # the experiment wins over a 100 % rollout


def test_explicit_versions_beat_policies_and_the_path_beats_the_header(client):
    put(client, {"default": "2", "experiment": EVERYONE_ON_1})
    assert version(client) == "1"
    assert version(client, **{"X-Model-Version": "2"}) == "2"
    assert version(client, "/v1/models/intent/versions/2/predict") == "2"
    path_one = "/v1/models/intent/versions/1/predict"
    assert version(client, path_one, **{"X-Model-Version": "2"}) == "1"


@pytest.mark.parametrize(
    "stored",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"intent": {"rollout": {"version": "7", "percent": 5}}}',  # not a served version
        b'{"intent": {"rollout": "sideways"}}',
        b"\xff\xfe",
    ],
)
def test_a_bad_stored_override_keeps_serving_and_the_next_good_one_applies(client, stored):
    put(client, {"default": "1"})
    assert version(client) == "1"
    services = services_of(client.app)
    assert services is not None
    store, router = services.store, services.router

    async def store_and_sync(value: bytes) -> bool:
        await store.put(OVERRIDES, value)
        return await router.sync()

    # sync() is what the watch loop runs every poll: it must not raise (it used to, and
    # the loop ended, so no later admin change was ever seen by this worker).
    assert client.portal.call(store_and_sync, stored) is False
    assert version(client) == "1"  # the last good routing still answers
    good = b'{"intent": {"default": "2"}}'
    assert client.portal.call(store_and_sync, good) is True
    assert version(client) == "2"
