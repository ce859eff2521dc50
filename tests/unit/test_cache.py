"""The result cache on its own (in-process store), and through the app with a fake Triton
for what needs a failing upstream."""

from __future__ import annotations

import asyncio

import pytest
from tritonclient.utils import InferenceServerException

from frontend.cache.keys import item_key, params_blob
from frontend.cache.service import ResultCache
from frontend.cache.store import MemoryCacheStore
from frontend.observability.metrics import Metrics
from frontend.settings import AuthSettings, CacheSettings
from frontend.state.counters import BufferedCounters
from frontend.state.memory import MemoryStore

from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client

# One model version's entries, for one account, cache on.
SCOPE = {
    "model": "m",
    "version": "1",
    "digest": "d",
    "params": {},
    "account": "t",
    "bypass": False,
}


async def run_ready_tasks(passes: int = 50) -> None:
    """Let every ready task run to its next await. Nothing here does I/O, so a fixed
    number of event-loop passes is deterministic (a sleep of some milliseconds is not)."""
    for _ in range(passes):
        await asyncio.sleep(0)


def _cache(**settings) -> ResultCache:
    counters = BufferedCounters(MemoryStore())
    return ResultCache(CacheSettings(**settings), MemoryCacheStore(100), counters, Metrics())


def test_keys_separate_every_field_and_resist_concatenation():
    base = ("tenant", "intent", "1", "digest", params_blob({"top_k": 1}), "hello")
    keys = {
        item_key(*base),
        item_key("tenant2", *base[1:]),
        item_key(base[0], "intent2", *base[2:]),
        item_key(*base[:2], "2", *base[3:]),
        item_key(*base[:3], "digest2", *base[4:]),
        item_key(*base[:4], params_blob({"top_k": 2}), base[5]),
        item_key(*base[:5], "hello "),
        item_key("ten", "antintent", *base[2:]),  # same concatenation, different fields
    }
    assert len(keys) == 8
    assert params_blob({"b": 1, "a": 2}) == params_blob({"a": 2, "b": 1})


def test_single_flight_and_per_item_reuse():
    calls: list[list[int]] = []

    async def run() -> None:
        cache = _cache()
        gate = asyncio.Event()

        async def compute(indices: list[int]) -> list[dict]:
            calls.append(indices)
            await gate.wait()
            return [{"n": i} for i in indices]

        fetches = [
            asyncio.create_task(cache.fetch(["a", "b", "a"], compute, **SCOPE)) for _ in range(10)
        ]
        await run_ready_tasks()  # every fetch has joined the one computation
        gate.set()
        outcomes = await asyncio.gather(*fetches)
        assert calls == [[0, 1]]  # one computation, duplicates inside a request folded
        assert all(o.values == [{"n": 0}, {"n": 1}, {"n": 0}] for o in outcomes)
        again = await cache.fetch(["b", "c"], compute, **SCOPE)
        assert calls[-1] == [1] and again.hits == 1  # only "c" computed

    asyncio.run(run())


def test_waiters_compute_themselves_when_the_owner_is_cancelled():
    async def run() -> None:
        cache = _cache()
        started = asyncio.Event()
        calls = 0

        async def slow(indices: list[int]) -> list[str]:
            nonlocal calls
            calls += 1
            started.set()
            await asyncio.sleep(10)  # a duration: never finishes before the cancel
            return ["never"]

        async def fast(indices: list[int]) -> list[str]:
            nonlocal calls
            calls += 1
            return ["fresh"]

        owner = asyncio.create_task(cache.fetch(["x"], slow, **SCOPE))
        await started.wait()
        waiter = asyncio.create_task(cache.fetch(["x"], fast, **SCOPE))
        await run_ready_tasks()  # the waiter is waiting on the owner's computation
        owner.cancel()  # the first client went away
        assert (await waiter).values == ["fresh"]
        assert calls == 2

    asyncio.run(run())


def test_failures_are_not_stored_and_reach_every_waiter():
    async def run() -> None:
        cache = _cache()

        async def boom(indices: list[int]) -> list[str]:
            await asyncio.sleep(0.01)  # a duration: a failure that takes a moment
            raise RuntimeError("upstream failed")

        results = await asyncio.gather(
            *(cache.fetch(["x"], boom, **SCOPE) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await cache.store.count("m") == 0

    asyncio.run(run())


def test_memory_store_expires_and_evicts():
    async def run() -> None:
        store = MemoryCacheStore(max_items=2)
        await store.put_many({"m:1:a": b"1", "m:1:b": b"2"}, ttl_s=60)
        await store.get_many(["m:1:a"])  # a is now the most recent
        await store.put_many({"m:1:c": b"3"}, ttl_s=60)
        assert await store.get_many(["m:1:a", "m:1:b", "m:1:c"]) == [b"1", None, b"3"]
        assert await store.purge("m", "1") == 2 and await store.count("m") == 0

    asyncio.run(run())


@pytest.fixture
def app(tmp_path):
    fake = FakeTriton()
    client = _client(tmp_path, fake, auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    yield client, fake
    client.__exit__(None, None, None)


def test_upstream_errors_are_never_cached(app):
    client, fake = app
    body = {"inputs": "hello"}
    fake.raise_next = InferenceServerException("busy", status="StatusCode.UNAVAILABLE")
    assert client.post("/v1/models/intent/predict", json=body).status_code == 503
    fake.raise_next = None
    ok = client.post("/v1/models/intent/predict", json=body)
    assert ok.status_code == 200 and ok.headers["X-Cache"] == "MISS"
    assert client.post("/v1/models/intent/predict", json=body).headers["X-Cache"] == "HIT"
    assert len(fake.calls) == 2  # the failure, then the one miss


def test_shared_scope_serves_every_tenant(tmp_path):
    fake = FakeTriton()
    client = _client(
        tmp_path,
        fake,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
        cache=CacheSettings(scope="shared"),
    )
    other = client.post("/v1/admin/keys", json={"name": "b", "tier": "pro"}).json()["key"]
    body = {"inputs": "hello"}
    assert client.post("/v1/models/intent/predict", json=body).headers["X-Cache"] == "MISS"
    r = client.post("/v1/models/intent/predict", json=body, headers={"X-API-Key": other})
    assert r.headers["X-Cache"] == "HIT" and len(fake.calls) == 1
    client.__exit__(None, None, None)


def test_cache_off_means_no_cache_headers(tmp_path):
    client = _client(tmp_path, FakeTriton(), cache=CacheSettings(enabled=False))
    r = client.post("/v1/models/intent/predict", json={"inputs": "hello"})
    assert r.status_code == 200 and "ETag" not in r.headers
    assert r.headers["Cache-Control"] == "no-store"
    client.__exit__(None, None, None)
