"""Which version answers when several rules apply (docs/routing.md, "Which version
answers"): an explicit version beats everything, the path beats the header, an
experiment beats a rollout, a rollout beats the default; and a bad stored routing
never stops a worker from serving or from seeing the next good one."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from frontend.container import services_of

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


NOT_JSON = object()  # a row whose config is not JSON at all (an SQLite file edited by hand)


@pytest.mark.parametrize(
    "stored",
    [
        NOT_JSON,
        [1, 2, 3],
        "sideways",
        {"rollout": {"version": "7", "percent": 5}},  # not a served version
        {"rollout": "sideways"},
        {"default": 2},  # versions are strings
    ],
)
def test_a_bad_stored_routing_keeps_serving_and_the_next_good_one_applies(client, stored):
    put(client, {"default": "1"})
    assert version(client) == "1"
    services = services_of(client.app)
    assert services is not None
    database, router = services.database, services.router

    async def store_and_sync(value: object) -> bool:
        raw = "{not json" if value is NOT_JSON else json.dumps(value)

        async def write(session) -> None:  # by hand: the API would refuse every one
            await session.execute(text("DELETE FROM routing"))
            await session.execute(
                text(
                    "INSERT INTO routing (model, config, updated_at, updated_by)"
                    " VALUES ('intent', :raw, :now, 'test')"
                ),
                {"raw": raw, "now": time.time()},
            )

        await database.run("test", write)
        await services.store.put("routing:changed", repr(value).encode())  # announced
        return await router.sync()

    # sync() is what the watch loop runs every poll: it must not raise (it used to, and
    # the loop ended, so no later admin change was ever seen by this worker).
    assert client.portal.call(store_and_sync, stored) is False
    assert version(client) == "1"  # the last good routing still answers
    assert client.portal.call(store_and_sync, {"default": "2"}) is True
    assert version(client) == "2"
