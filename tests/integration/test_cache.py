"""Response caching over real Triton and a private Redis: hits, keys, ETag/304, per-item
batches (Triton's own counters show only the misses went to it), single-flight, opt-out,
tenant scope, purge, and the admin summary."""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import httpx
import pytest

from procs.triton_metrics import settled_counter
from procs.wait import wait_for

from .conftest import ADMIN, LiveFrontend, RedisServer, frontend_settings

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/intent/versions/1/predict"


def triton_counter(triton, name: str, model: str, version: str) -> float:
    return settled_counter(triton.metrics_url, name, model, version)


@pytest.fixture(scope="module")
def cached(triton, repository, tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("redis-cache")).start()
    from frontend.app import create_app

    settings = frontend_settings(
        triton.grpc_url,
        repository,
        redis_url=redis.url,
        cache={"enabled": True, "ttl_s": 600, "ttls": {"embed": 77}},
    )
    live = LiveFrontend(create_app(settings))
    with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as http:
        yield http, live, redis
    live.stop()
    redis.kill()


def unique(prefix: str = "book a table") -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def test_hit_after_miss_same_body_and_etag(cached):
    http, _, _ = cached
    body = {"inputs": unique(), "top_k": 3}
    first = http.post(PREDICT, json=body)
    second = http.post(PREDICT, json=body)
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert first.content == second.content
    assert first.headers["ETag"] == second.headers["ETag"]
    assert second.headers["Cache-Control"] == "private, max-age=600"
    assert second.headers["X-Model-Version"] == "1"


def test_key_changes_with_version_and_parameters(cached):
    http, _, _ = cached
    text = unique()
    assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "MISS"
    assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "HIT"
    other_version = http.post("/v1/models/intent/versions/2/predict", json={"inputs": text})
    assert other_version.headers["X-Cache"] == "MISS"
    assert other_version.json()["version"] == "2"
    assert http.post(PREDICT, json={"inputs": text, "top_k": 2}).headers["X-Cache"] == "MISS"
    all_scores = http.post(PREDICT, json={"inputs": text, "return_all_scores": True})
    assert (
        all_scores.headers["X-Cache"] == "MISS" and "scores" in all_scores.json()["predictions"][0]
    )


def test_if_none_match_gives_304_without_a_body(cached):
    http, _, _ = cached
    body = {"inputs": unique()}
    etag = http.post(PREDICT, json=body).headers["ETag"]
    not_modified = http.post(PREDICT, json=body, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    other = http.post(PREDICT, json=body, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.headers["ETag"] == etag


def test_batch_sends_only_the_misses_to_triton(cached, triton):
    http, _, _ = cached
    a, b, c, d = (unique(p) for p in ("refund my order", "play jazz", "wake me at 6", "hello"))
    http.post(PREDICT, json={"inputs": [a, b]})
    requests_before = triton_counter(triton, "nv_inference_request_success", "intent", "1")
    items_before = triton_counter(triton, "nv_inference_count", "intent", "1")
    r = http.post(PREDICT, json={"inputs": [a, c, b, d, c]})
    assert r.status_code == 200 and r.headers["X-Cache-Hits"] == "2/5"
    assert r.headers["X-Cache"] == "MISS"  # not every item hit
    assert (
        triton_counter(triton, "nv_inference_request_success", "intent", "1") - requests_before == 1
    )
    # Only c and d were inferred (c once, although it appears twice).
    assert triton_counter(triton, "nv_inference_count", "intent", "1") - items_before == 2
    labels = [p["label"] for p in r.json()["predictions"]]
    assert labels[1] == labels[4]
    whole = http.post(PREDICT, json={"inputs": [a, c, b, d, c]})
    assert whole.headers["X-Cache"] == "HIT" and whole.content == r.content


def _items(http, result: str) -> float:
    found = re.search(
        rf'infergate_cache_items_total\{{model="intent",result="{result}"\}} (\S+)',
        http.get("/metrics").text,
    )
    return float(found.group(1)) if found else 0.0


def test_single_flight_fifty_identical_misses_one_inference(cached, triton):
    http, live, _ = cached
    body = {"inputs": [unique(f"long question {i}") for i in range(8)]}
    before = triton_counter(triton, "nv_inference_request_success", "intent", "1")
    coalesced_before, hits_before = _items(http, "coalesced"), _items(http, "hit")

    async def burst() -> list[tuple[int, str]]:
        async with aiohttp.ClientSession(headers=ADMIN) as session:

            async def one() -> tuple[int, str]:
                async with session.post(live.url + PREDICT, json=body) as r:
                    await r.read()
                    return r.status, r.headers["X-Cache"]

            return await asyncio.gather(*(one() for _ in range(50)))

    results = asyncio.run(burst())
    assert [status for status, _ in results] == [200] * 50
    assert triton_counter(triton, "nv_inference_request_success", "intent", "1") - before == 1
    # Every item of every answer comes from the one inference: computed once (8 items),
    # waited for (coalesced) or read back once stored (hit) - nothing else. (A request may
    # mix the last two while the 8 entries are being written.)
    caches = [cache for _, cache in results]
    assert caches.count("MISS") >= 1 and caches.count("MISS") + caches.count("HIT") == 50
    coalesced = _items(http, "coalesced") - coalesced_before
    hits = _items(http, "hit") - hits_before
    assert coalesced + hits == 50 * len(body["inputs"]) - len(body["inputs"])


def test_opting_out_neither_reads_nor_writes(cached):
    http, _, _ = cached
    body = {"inputs": unique()}
    out = http.post(PREDICT, json=body, headers={"Cache-Control": "no-cache"})
    assert out.status_code == 200 and "ETag" not in out.headers and "X-Cache" not in out.headers
    assert out.headers["Cache-Control"] == "no-store"
    assert http.post(PREDICT, json=body).headers["X-Cache"] == "MISS"  # nothing was written
    assert (
        http.post(PREDICT, json=body, headers={"Cache-Control": "no-store"}).headers[
            "Cache-Control"
        ]
        == "no-store"
    )


def test_errors_are_never_cached(cached, triton, repository):
    """A real Triton failure (the deadline passes inside Triton) through a second frontend
    on the same Redis cache: nothing is stored, so the healthy frontend misses."""
    from frontend.app import create_app

    http, _, redis = cached
    body = {"inputs": [unique(f"deadline {i}") for i in range(64)]}
    settings = frontend_settings(
        triton.grpc_url,
        repository,
        redis_url=redis.url,
        cache={"enabled": True, "ttl_s": 600},
        timeouts={"intent": 0.001},
    )
    failing = LiveFrontend(create_app(settings))
    try:
        with httpx.Client(base_url=failing.url, timeout=60, headers=ADMIN) as other:
            r = other.post(PREDICT, json=body)
    finally:
        failing.stop()
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert "X-Cache" not in r.headers and "ETag" not in r.headers
    healthy = http.post(PREDICT, json=body)
    assert healthy.status_code == 200 and healthy.headers["X-Cache-Hits"] == "0/64"
    # Refused before the cache (schema) is never cached either.
    bad = {"inputs": ["ok", ""]}
    assert http.post(PREDICT, json=bad).status_code == 422
    again = http.post(PREDICT, json=bad)
    assert again.status_code == 422 and "X-Cache" not in again.headers


def test_cache_is_per_tenant_by_default(cached):
    http, _, _ = cached
    made = http.post("/v1/admin/keys", json={"name": "tenant b", "tier": "pro"}).json()
    body = {"inputs": unique()}
    assert http.post(PREDICT, json=body).headers["X-Cache"] == "MISS"
    assert http.post(PREDICT, json=body).headers["X-Cache"] == "HIT"
    other = http.post(PREDICT, json=body, headers={"X-API-Key": made["key"]})
    assert other.headers["X-Cache"] == "MISS"  # another tenant never sees the first's entry


def test_embeddings_hit_is_byte_identical(cached):
    http, _, _ = cached
    body = {"model": "embed", "input": [unique("hello"), unique("world")]}
    first = http.post("/v1/embeddings", json=body)
    second = http.post("/v1/embeddings", json=body)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    b64 = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    assert b64.headers["X-Cache"] == "HIT"  # the format is rendered after the cache


def test_purge_and_admin_summary(cached):
    http, _, redis = cached
    text = unique()
    http.post(PREDICT, json={"inputs": text})
    assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "HIT"
    summary = http.get("/v1/admin/cache").json()
    intent = summary["models"]["intent"]
    assert summary["backend"] == "redis" and summary["scope"] == "tenant"
    assert intent["hits"] >= 1 and intent["misses"] >= 1 and intent["entries"] >= 1
    assert 0 < intent["hit_rate"] < 1
    client = redis.client()
    v1_entries = len(list(client.scan_iter(match="ig:cache:intent:1:*")))
    others = len(list(client.scan_iter(match="ig:cache:intent:*"))) - v1_entries
    assert intent["entries"] == v1_entries + others and v1_entries >= 1
    purged = http.delete("/v1/admin/cache/intent/versions/1").json()
    assert purged["purged"] == v1_entries
    # Only version 1's entries went (the version test above cached some of version 2).
    assert http.get("/v1/admin/cache").json()["models"]["intent"]["entries"] == others
    assert not list(client.scan_iter(match="ig:cache:intent:1:*"))
    client.close()
    assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "MISS"
    assert http.delete("/v1/admin/cache/nope").status_code == 404
    assert http.delete("/v1/admin/cache/intent/versions/7").status_code == 404
    assert http.delete("/v1/admin/cache/intent").json()["model"] == "intent"
    metrics = http.get("/metrics").text
    assert re.search(r'infergate_cache_items_total\{model="intent",result="hit"\} [1-9]', metrics)


def test_entries_expire_after_their_model_ttl(cached):
    """TTL 600 s by default here, 77 s for `embed` (INFERGATE_CACHE__TTLS), on the Redis keys
    themselves; the answer's max-age says the same."""
    http, _, redis = cached
    intent = http.post(PREDICT, json={"inputs": unique("ttl check")})
    embed = http.post("/v1/embeddings", json={"model": "embed", "input": unique("ttl check")})
    assert "max-age=600" in intent.headers["Cache-Control"]
    assert "max-age=77" in embed.headers["Cache-Control"]
    client = redis.client()
    try:
        embed_ttls = {client.ttl(k) for k in client.scan_iter(match="ig:cache:embed:*")}
        intent_ttls = {client.ttl(k) for k in client.scan_iter(match="ig:cache:intent:1:*")}
    finally:
        client.close()
    assert embed_ttls and all(60 < t <= 77 for t in embed_ttls)
    assert intent_ttls and all(77 < t <= 600 for t in intent_ttls)


def test_redis_outage_turns_lookups_into_misses_and_serving_goes_on(triton, repository, tmp_path):
    """Redis killed: a lookup is a miss, the write is skipped, the answer is 200; once Redis
    is back (restarted empty on the same port) entries are written and hit again."""
    from frontend.app import create_app

    redis = RedisServer(tmp_path).start()
    settings = frontend_settings(
        triton.grpc_url, repository, redis_url=redis.url, cache={"enabled": True}
    )
    live = LiveFrontend(create_app(settings))
    text = unique("outage")
    try:
        with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as http:
            assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "MISS"
            assert http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "HIT"
            redis.kill()
            during = [http.post(PREDICT, json={"inputs": text}) for _ in range(5)]
            assert [r.status_code for r in during] == [200] * 5
            assert {r.headers["X-Cache"] for r in during} == {"MISS"}
            redis.start()

            def hit_again() -> bool:
                http.post(PREDICT, json={"inputs": text})
                return http.post(PREDICT, json={"inputs": text}).headers["X-Cache"] == "HIT"

            wait_for(hit_again, "the cache to work again after Redis is back", timeout_s=10)
    finally:
        live.stop()
        redis.kill()
