"""Durability with the real stack (`python -m frontend serve` over the session's Triton):
users, API keys, routing, the audit log and the usage ledger live in SQL, so a restart,
a flushed Redis or a SIGTERM loses none of them, and a SIGKILL loses at most the usage
counted since each worker's last ledger write (docs/reliability.md, "Durability")."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass

import aiohttp
import pytest

from procs.wait import wait_for

from .conftest import ADMIN
from .stack import (
    PREDICT,
    Paced,
    Stack,
    create_key,
    create_user,
    fresh,
    from_both_workers,
    ledger_requests,
    login,
    predict,
    private_redis,
    sqlite_url,
)

pytestmark = pytest.mark.integration
PREDICTIONS = 5  # made with the standalone key before the restart
FLUSH_S = 1.0  # database.usage_flush_s, the default


@dataclass
class Records:
    username: str
    user_id: str
    access_token: str
    key: str
    key_id: str
    user_key: str
    revoked_key: str
    revoked_id: str


def _make_records(url: str, tag: str, workers: int) -> Records:
    """A user (logged in), a standalone key and one of the user's keys, a revoked key, a
    routing change (intent's default 2 -> 1), and PREDICTIONS requests with the key."""
    user = create_user(url, f"durable-{tag}")
    tokens = login(url, f"durable-{tag}")
    key = create_key(url, name="standalone")
    user_key = create_key(url, name="users", user_id=user["id"])
    revoked = create_key(url, name="revoked")
    r = fresh(url, "DELETE", f"/v1/admin/keys/{revoked['id']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    r = fresh(url, "PUT", "/v1/admin/routing/intent", headers=ADMIN, json={"default": "1"})
    assert r.status_code == 200, r.text

    # Every worker applies it within a second (the admin's requests: not the key's usage).
    def admin_predict():
        return predict(url, ADMIN["X-API-Key"])

    wait_for(
        lambda: all(
            a.headers["X-Model-Version"] == "1"
            for a in (
                from_both_workers(admin_predict, need=1) if workers > 1 else [admin_predict()]
            )
        ),
        "every worker to route intent to version 1",
        10,
        interval_s=0.1,
    )
    for i in range(PREDICTIONS):
        answer = predict(url, key["key"], f"book a table for {i}")
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1", answer.text
    return Records(
        username=f"durable-{tag}",
        user_id=user["id"],
        access_token=tokens["access_token"],
        key=key["key"],
        key_id=key["id"],
        user_key=user_key["key"],
        revoked_key=revoked["key"],
        revoked_id=revoked["id"],
    )


def _ledger_via_api(url: str, key_id: str) -> int:
    r = fresh(url, "GET", f"/v1/admin/usage?key={key_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return sum(group["requests"] for group in r.json()["data"])


def _check_records(url: str, records: Records, database_url: str, workers: int) -> int:
    """Every record is there and works (in every worker when there are two). Returns the
    predictions it made with the standalone key (the ledger counts them too)."""

    def each_worker(call) -> list:
        return from_both_workers(call) if workers > 1 else [call()]

    # The ledger first: what the checks below use is counted on top.
    assert ledger_requests(database_url, f"key:{records.key_id}") == PREDICTIONS
    assert _ledger_via_api(url, records.key_id) == PREDICTIONS

    key = {"X-API-Key": records.key}
    for answer in each_worker(lambda: fresh(url, "GET", "/v1/models", headers=key)):
        assert answer.status_code == 200, answer.text
    predictions = each_worker(lambda: predict(url, records.key))
    for answer in predictions:  # the routing: v1 in every worker
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    user_key = {"X-API-Key": records.user_key}
    for answer in each_worker(lambda: fresh(url, "GET", "/v1/usage", headers=user_key)):
        assert answer.status_code == 200, answer.text
    revoked = {"X-API-Key": records.revoked_key}
    for answer in each_worker(lambda: fresh(url, "GET", "/v1/models", headers=revoked)):
        assert answer.status_code == 401, answer.text
    bearer = {"Authorization": f"Bearer {records.access_token}"}
    for answer in each_worker(lambda: fresh(url, "GET", "/v1/usage", headers=bearer)):
        assert answer.status_code == 200, answer.text
    fresh_login = login(url, records.username)
    assert fresh_login["access_token"]

    routing = fresh(url, "GET", "/v1/admin/routing/intent", headers=ADMIN).json()
    assert routing["default"] == "1"
    history = fresh(url, "GET", "/v1/admin/routing/intent/history", headers=ADMIN).json()
    assert [(h["actor"], h["current"]["default"]) for h in history["data"]][:1] == [
        ("bootstrap", "1")
    ]

    audit = fresh(url, "GET", "/v1/admin/audit?limit=200", headers=ADMIN)
    assert audit.status_code == 200, audit.text
    entries = {(e["action"], e["target"]) for e in audit.json()["data"]}
    assert {
        ("user.create", f"user:{records.user_id}"),
        ("key.create", f"key:{records.key_id}"),
        ("key.create", f"key:{records.revoked_id}"),
        ("key.revoke", f"key:{records.revoked_id}"),
        ("routing.update", "model:intent"),
    } <= entries
    return len(predictions)


def test_embedded_records_survive_a_restart(triton, repository, tmp_path):
    """No Redis, the SQLite file: stopped (SIGTERM) and started again on the same file."""
    database_url = sqlite_url(tmp_path)
    stack = Stack(triton, repository, tmp_path, database_url=database_url)
    try:
        records = _make_records(stack.url, "embedded", workers=1)
    finally:
        code = stack.stop()
    assert code == 0
    again = Stack(triton, repository, tmp_path, database_url=database_url)
    try:
        _check_records(again.url, records, database_url, workers=1)
    finally:
        again.stop()


def test_records_survive_flushall_and_a_restart(triton, repository, tmp_path, database_url):
    """Two workers and a private Redis: FLUSHALL empties Redis, and every record is still
    there and working at once (markers gone: a reload from SQL); then a restart too."""
    redis = private_redis(tmp_path)
    stack = Stack(
        triton, repository, tmp_path, database_url=database_url, redis_url=redis.url, workers=2
    )
    try:
        records = _make_records(stack.url, "flushed", workers=2)
        # The periodic writes (every second per worker) have the predictions.
        wait_for(
            lambda: ledger_requests(database_url, f"key:{records.key_id}") == PREDICTIONS,
            "the ledger to have the predictions",
            10,
            interval_s=0.1,
        )
        client = redis.client()
        assert client.dbsize() > 0
        client.flushall()
        assert client.dbsize() == 0
        checked = _check_records(stack.url, records, database_url, workers=2)

        # A change made after the flush reaches both workers at once, as before it.
        late = create_key(stack.url, name="after-flush")
        late_auth = {"X-API-Key": late["key"]}
        assert {
            r.status_code
            for r in from_both_workers(
                lambda: fresh(stack.url, "GET", "/v1/models", headers=late_auth)
            )
        } == {200}
        r = fresh(stack.url, "DELETE", f"/v1/admin/keys/{late['id']}", headers=ADMIN)
        assert r.status_code == 200
        assert {
            r.status_code
            for r in from_both_workers(
                lambda: fresh(stack.url, "GET", "/v1/models", headers=late_auth)
            )
        } == {401}
        client.close()
    finally:
        code = stack.stop()
    assert code == 0
    again = Stack(
        triton, repository, tmp_path, database_url=database_url, redis_url=redis.url, workers=2
    )
    try:
        # Every prediction made with the key, before the flush and after it.
        _check_after_restart(again.url, records, database_url, PREDICTIONS + checked)
    finally:
        again.stop()
        redis.kill()


def _check_after_restart(url: str, records: Records, database_url: str, predicted: int) -> None:
    assert ledger_requests(database_url, f"key:{records.key_id}") == predicted
    assert _ledger_via_api(url, records.key_id) == predicted
    key = {"X-API-Key": records.key}
    assert {
        r.status_code
        for r in from_both_workers(lambda: fresh(url, "GET", "/v1/models", headers=key))
    } == {200}
    revoked = {"X-API-Key": records.revoked_key}
    assert {
        r.status_code
        for r in from_both_workers(lambda: fresh(url, "GET", "/v1/models", headers=revoked))
    } == {401}
    assert login(url, records.username)["access_token"]
    assert fresh(url, "GET", "/v1/admin/routing/intent", headers=ADMIN).json()["default"] == "1"
    answer = predict(url, records.key)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"


def test_a_change_just_before_flushall_is_not_undone(triton, repository, tmp_path):
    """A key both workers hold, revoked, and Redis flushed before the other worker saw the
    revocation's marker: the flush must not bring the key back in either worker."""
    redis = private_redis(tmp_path)
    database_url = sqlite_url(tmp_path)
    stack = Stack(
        triton, repository, tmp_path, database_url=database_url, redis_url=redis.url, workers=2
    )
    try:
        key = create_key(stack.url)
        auth = {"X-API-Key": key["key"]}
        held = from_both_workers(lambda: fresh(stack.url, "GET", "/v1/models", headers=auth))
        assert {r.status_code for r in held} == {200}
        r = fresh(stack.url, "DELETE", f"/v1/admin/keys/{key['id']}", headers=ADMIN)
        assert r.status_code == 200
        client = redis.client()
        client.flushall()
        client.close()
        after = from_both_workers(lambda: fresh(stack.url, "GET", "/v1/models", headers=auth))
        codes = [(r.headers["X-Infergate-Worker"], r.status_code) for r in after]
        assert {code for _, code in codes} == {401}, codes
    finally:
        stack.stop()
        redis.kill()


# --- the usage ledger under SIGTERM and SIGKILL --------------------------------------------


def _burst(url: str, key: str, total: int, concurrency: int) -> list[tuple[int, str]]:
    """`total` predictions, `concurrency` at a time, each on a new connection."""

    async def run() -> list[tuple[int, str]]:
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> tuple[int, str]:
                async with session.post(
                    url + PREDICT,
                    headers={"X-API-Key": key},
                    json={"inputs": f"book a table for {i % 10} people"},
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as r:
                    await r.read()
                    return r.status, r.headers.get("X-Infergate-Worker", "")

            return await asyncio.gather(*(one(i) for i in range(total)))

    return asyncio.run(run())


def test_sigterm_writes_every_counted_request(triton, repository, tmp_path, database_url):
    """1 000 predictions over two workers, then SIGTERM at once: the ledger has exactly
    1 000 requests for the key (each worker writes what it counted before it exits)."""
    redis = private_redis(tmp_path)
    stack = Stack(
        triton, repository, tmp_path, database_url=database_url, redis_url=redis.url, workers=2
    )
    try:
        key = create_key(stack.url)
        answers = _burst(stack.url, key["key"], 1000, 32)
        before = ledger_requests(database_url, f"key:{key['id']}")
    finally:
        code = stack.stop()  # SIGTERM right after the last answer
        redis.kill()
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    assert len({worker for _, worker in answers}) == 2  # both workers answered
    assert code == 0
    after = ledger_requests(database_url, f"key:{key['id']}")
    print(f"ledger: {before} of 1000 written before SIGTERM, {after} after it")
    assert after == 1000


def test_sigkill_loses_at_most_one_flush_interval(triton, repository, tmp_path, database_url):
    """Steady load on two workers, then SIGKILL to the whole process group: the ledger
    misses at most what the workers answered in their last flush interval (each writes
    every second), plus a small margin for a write in flight; it never has more than was
    sent."""
    redis = private_redis(tmp_path)
    stack = Stack(
        triton, repository, tmp_path, database_url=database_url, redis_url=redis.url, workers=2
    )
    rate = 40.0  # requests per second, over both workers
    try:
        key = create_key(stack.url)
        load = Paced(rate, ["predict"], lambda _: predict(stack.url, key["key"]), threads=24)
        time.sleep(4.0)  # a duration: steady load before the kill
        killed_at = time.monotonic()
        stack.kill()
        sent = load.stop()
    finally:
        stack.kill()
        redis.kill()
    before_kill = [s for s in sent if s.started < killed_at]
    ok = [s for s in before_kill if s.status == 200]
    unanswered = [s for s in before_kill if s.status != 200]
    # Every request answered before the kill succeeded; the rest had no answer.
    assert all(s.status in (0,) for s in unanswered), {s.status for s in unanswered}
    first = min(s.started for s in ok)
    measured_rate = len(ok) / (killed_at - first)
    per_worker = collections.Counter(s.headers["x-infergate-worker"] for s in ok)
    counted = ledger_requests(database_url, f"key:{key['id']}")
    lost = len(ok) - counted
    bound = math.ceil(FLUSH_S * measured_rate * 1.2) + 5
    print(
        f"SIGKILL at {measured_rate:.0f} req/s ({dict(per_worker)} per worker): {len(ok)} answered "
        f"200, ledger {counted}, lost {lost} (bound {bound}); {len(unanswered)} unanswered"
    )
    assert counted <= len(ok) + len(unanswered)  # nothing counted twice
    assert lost <= bound
    assert len(per_worker) == 2
