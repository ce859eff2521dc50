"""The audit log and the routing history through the admin API (the real app over a fake
Triton and its in-memory database): who did what, on what, in which request; newest
first, a bounded page at a time; filters; bad input 422, never 500; admins only."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from .test_frontend_errors import FakeTriton, _client, assert_envelope

PREDICT = "/v1/models/intent/predict"


@pytest.fixture
def client(tmp_path):
    client = _client(tmp_path, FakeTriton())
    yield client
    client.__exit__(None, None, None)


def put(client, routing: dict) -> str:
    r = client.put("/v1/admin/routing/intent", json=routing)
    assert r.status_code == 200, r.text
    return r.headers["X-Request-ID"]


def audit(client, **params) -> dict:
    r = client.get("/v1/admin/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_routing_changes_are_in_the_history_and_the_audit_log(client):
    first = put(client, {"default": "1"})
    second = put(client, {"default": "2", "versions": {"1": {"status": "deprecated"}}})
    reset = client.delete("/v1/admin/routing/intent")
    assert reset.status_code == 200

    history = client.get("/v1/admin/routing/intent/history")
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["model"] == "intent" and body["next_cursor"] is None
    newest, middle, oldest = body["data"]
    fields = {"id", "model", "changed_at", "actor", "request_id", "previous", "current"}
    assert set(newest) == fields
    assert [e["request_id"] for e in body["data"]] == [
        reset.headers["X-Request-ID"],
        second,
        first,
    ]
    assert {e["actor"] for e in body["data"]} == {"bootstrap"}  # the bootstrap admin key
    assert oldest["previous"] is None and oldest["current"]["default"] == "1"
    assert middle["previous"] == oldest["current"]
    assert middle["current"]["versions"]["1"]["status"] == "deprecated"
    assert newest["previous"] == middle["current"] and newest["current"] is None
    assert abs(newest["changed_at"] - time.time()) < 60

    entries = audit(client)["data"]
    assert [(e["action"], e["target"], e["request_id"]) for e in entries] == [
        ("routing.reset", "model:intent", reset.headers["X-Request-ID"]),
        ("routing.update", "model:intent", second),
        ("routing.update", "model:intent", first),
    ]
    assert [e["details"]["history_id"] for e in entries] == [e["id"] for e in body["data"]]
    assert set(entries[0]) == {"id", "at", "actor", "action", "target", "request_id", "details"}


def test_pages_follow_the_cursor_newest_first_without_gaps(client):
    for default in ("1", "2", "1", "2", "1"):
        put(client, {"default": default})
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/admin/routing/intent/history", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [e["id"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5 and seen == sorted(seen, reverse=True)

    ids = []
    cursor = None
    while True:
        page = audit(client, limit=4, **({"cursor": cursor} if cursor else {}))
        ids += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) == 5 and ids == sorted(ids, reverse=True)
    exact = audit(client, limit=5)  # a full last page: no cursor to an empty one
    assert len(exact["data"]) == 5 and exact["next_cursor"] is None


def test_the_audit_log_filters_by_action_actor_target_and_time(client):
    put(client, {"default": "1"})
    assert client.delete("/v1/admin/routing/intent").status_code == 200
    assert client.delete("/v1/admin/cache").status_code == 200
    assert [e["action"] for e in audit(client, action="routing.reset")["data"]] == ["routing.reset"]
    assert len(audit(client, target="model:intent")["data"]) == 2
    assert [e["target"] for e in audit(client, target="cache:*")["data"]] == ["cache:*"]
    assert len(audit(client, actor="bootstrap")["data"]) == 3
    assert audit(client, actor="key:nobody")["data"] == []
    now = datetime.now(UTC)
    hour_ago = datetime.fromtimestamp(now.timestamp() - 3600, UTC)
    assert len(audit(client, **{"from": hour_ago.isoformat()})["data"]) == 3
    assert audit(client, **{"to": hour_ago.isoformat()})["data"] == []
    naive = hour_ago.replace(tzinfo=None).isoformat()  # read as UTC
    assert len(audit(client, **{"from": naive, "action": "cache.purge"})["data"]) == 1
    later = datetime.fromtimestamp(now.timestamp() + 3600, UTC).isoformat()
    assert audit(client, **{"from": later})["data"] == []


def test_cache_purges_are_audited_with_their_target_and_count(client):
    for text in ("a", "b", "c"):
        r = client.post(PREDICT, json={"inputs": text})
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    one = client.delete("/v1/admin/cache/intent/versions/02")  # "02" is version 2
    assert one.status_code == 200 and one.json()["purged"] == 3
    model = client.delete("/v1/admin/cache/intent")
    everything = client.delete("/v1/admin/cache")
    entries = audit(client, action="cache.purge")["data"]
    assert [(e["target"], e["details"], e["request_id"]) for e in entries] == [
        ("cache:*", {"purged": 0}, everything.headers["X-Request-ID"]),
        ("cache:intent", {"purged": 0}, model.headers["X-Request-ID"]),
        ("cache:intent:v2", {"purged": 3}, one.headers["X-Request-ID"]),
    ]
    assert {e["actor"] for e in entries} == {"bootstrap"}


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"to": "2024-13-01T00:00:00Z"},
        {"from": "2024-06-02T00:00:00Z", "to": "2024-06-01T00:00:00Z"},  # backwards
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": "YmVmb3JlOi0x"},  # "before:-1"
        {"cursor": "x" * 65},
        {"action": "a" * 65},
        {"target": "t" * 161},
    ],
)
def test_bad_audit_queries_are_422(client, params):
    assert_envelope(client.get("/v1/admin/audit", params=params), 422, "validation_error")


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"cursor": "%%%"}, {"cursor": "YmVmb3JlOjA"}]
)
def test_bad_history_queries_are_422(client, params):
    r = client.get("/v1/admin/routing/intent/history", params=params)
    assert_envelope(r, 422, "validation_error")


def test_history_of_an_unknown_model_is_404_and_admin_only(client):
    assert_envelope(client.get("/v1/admin/routing/nope/history"), 404, "model_not_found")
    user_key = client.post("/v1/admin/keys", json={"name": "u", "tier": "pro"}).json()["key"]
    as_user = {"X-API-Key": user_key}
    for path in ("/v1/admin/routing/intent/history", "/v1/admin/audit"):
        assert_envelope(client.get(path, headers=as_user), 403, "forbidden")
        assert_envelope(client.get(path, headers={"X-API-Key": ""}), 401, "unauthorized")
