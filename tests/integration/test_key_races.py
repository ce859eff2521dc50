"""Races on the real stack: `serve --workers 2` with a private Redis, on each engine (one
stack per engine for the module). Concurrent creations of one name, concurrent key
creations, a revocation racing requests in flight, and a key's own request limit counted
across both workers."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from .conftest import ADMIN
from .stack import PASSWORD, Stack, create_key, dump, fresh, from_both_workers, private_redis

pytestmark = pytest.mark.integration


# These tests hold atomicity (200 calls at once over two workers), not latency: Redis
# deadlines of 5 s, not the service's 0.5 s, so that a loaded CI machine answering the
# 200th call late does not read as Redis down (seen once on a clean-clone run: each worker
# fell back to its own local window and admitted the key's 40).
ATOMICITY_NOT_LATENCY = {
    "INFERGATE_REDIS__SOCKET_TIMEOUT_S": "5",
    "INFERGATE_REDIS__DEADLINE_S": "5",
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, triton, repository, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"races-{request.param}")
    server = name = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'infergate.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        if not server.running:
            server.start()
        name = server.create_database()
        database_url = server.url(name)
    redis = private_redis(tmp)
    try:
        served = Stack(
            triton,
            repository,
            tmp,
            database_url=database_url,
            redis_url=redis.url,
            workers=2,
            env=ATOMICITY_NOT_LATENCY,
        )
        yield served
        served.stop()
    finally:
        redis.kill()
        if server is not None and name is not None:
            server.drop_database(name)


@dataclass
class Answer:
    status: int
    worker: str
    body: bytes
    started: float = 0.0
    ended: float = 0.0


async def _gather(calls: list, concurrency: int) -> list[Answer]:
    """Each call `(session) -> Answer`, all at once (up to `concurrency` connections),
    each on a new connection: they land on either worker."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(*(call(session) for call in calls))


def _request(method: str, url: str, **kw):
    async def call(session: aiohttp.ClientSession) -> Answer:
        started = time.monotonic()
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=60), **kw) as r:
            body = await r.read()
            worker = r.headers.get("X-Infergate-Worker", "")
            return Answer(r.status, worker, body, started, time.monotonic())

    return call


def _codes(answers: list[Answer]) -> dict[int, int]:
    return dict(collections.Counter(a.status for a in answers))


def test_fifty_concurrent_creations_of_one_username_make_one_user(stack):
    # The kernel spreads connections over the two workers as it likes: on a loaded
    # machine one round of 50 can land on one worker. Each round must make exactly one
    # user; up to three rounds (three names) until both workers have taken part.
    workers: set[str] = set()
    for round_ in range(3):
        name = f"race-{stack.port}-{round_}"
        body = {"username": name, "password": PASSWORD, "tier": "unlimited"}
        calls = [_request("POST", stack.url + "/v1/admin/users", headers=ADMIN, json=body)] * 50
        answers = asyncio.run(_gather(calls, 50))
        codes = _codes(answers)
        print(f"50 concurrent creations of {name!r}: {codes}")
        assert codes == {201: 1, 409: 49}
        workers |= {a.worker for a in answers}
        if len(workers) == 2:
            break
    assert len(workers) == 2  # both workers took part
    users = fresh(stack.url, "GET", "/v1/admin/users", headers=ADMIN).json()["data"]
    assert [u["username"] for u in users].count(name) == 1
    login = fresh(
        stack.url, "POST", "/v1/auth/token", json={"username": name, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    audit = fresh(stack.url, "GET", "/v1/admin/audit?action=user.create&limit=200", headers=ADMIN)
    created = [e for e in audit.json()["data"] if e["details"].get("username") == name]
    assert len(created) == 1


def test_a_hundred_concurrent_key_creations_make_a_hundred_working_keys(stack):
    body = {"name": "concurrent", "tier": "unlimited"}
    calls = [_request("POST", stack.url + "/v1/admin/keys", headers=ADMIN, json=body)] * 100
    answers = asyncio.run(_gather(calls, 100))
    assert _codes(answers) == {201: 100}
    made = [orjson.loads(a.body) for a in answers]
    assert len({k["id"] for k in made}) == 100 and len({k["key"] for k in made}) == 100
    uses = [
        _request("GET", stack.url + "/v1/models", headers={"X-API-Key": k["key"]}) for k in made
    ]
    used = asyncio.run(_gather(uses, 50))
    assert _codes(used) == {200: 100}
    assert len({a.worker for a in used}) == 2
    listed = fresh(stack.url, "GET", "/v1/admin/keys", headers=ADMIN).json()["data"]
    assert {k["id"] for k in made} <= {k["id"] for k in listed}
    stored = dump(stack.database_url)
    assert not any(k["key"] in stored for k in made)  # digests only


def test_a_revocation_racing_requests_in_flight(stack):
    """200 or more requests at a steady pace on new connections, the key revoked after the
    100th, until 40 were sent after it answered: every answer is 200 or 401 (never a
    500), and every request sent after the revocation was answered is refused, whichever
    worker takes it."""
    key = create_key(stack.url)
    auth = {"X-API-Key": key["key"]}
    held = from_both_workers(lambda: fresh(stack.url, "GET", "/v1/models", headers=auth))
    assert {r.status_code for r in held} == {200}  # both workers hold the key

    async def race() -> tuple[list[Answer], float, float, int]:
        connector = aiohttp.TCPConnector(limit=200, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            call = _request("GET", stack.url + "/v1/models", headers=auth)
            revoke = _request("DELETE", stack.url + f"/v1/admin/keys/{key['id']}", headers=ADMIN)
            tasks = []
            revoking = None
            after_revoked = 0
            # At least 200, and on until 40 have been sent after the revocation answered
            # (a slow revocation on a loaded machine must not leave none after it).
            for i in range(2000):
                tasks.append(asyncio.ensure_future(call(session)))
                if i == 100:
                    revoking = asyncio.ensure_future(revoke(session))
                if revoking is not None and revoking.done():
                    after_revoked += 1
                if i >= 199 and after_revoked >= 40:
                    break
                await asyncio.sleep(0.002)  # 500 a second: many in flight at the revocation
            answers = await asyncio.gather(*tasks)
            assert revoking is not None
            revoked = await revoking
            return answers, revoked.started, revoked.ended, revoked.status

    answers, revoke_sent, revoke_done, revoke_status = asyncio.run(race())
    assert revoke_status == 200
    codes = _codes(answers)
    after = [a for a in answers if a.started > revoke_done]
    during = [a for a in answers if revoke_sent <= a.started <= revoke_done]
    print(
        f"revoke race: {codes}; {len(during)} sent while the revocation was in flight, "
        f"{len(after)} after it answered ({_codes(after)})"
    )
    assert set(codes) <= {200, 401}
    assert after and all(a.status == 401 for a in after)
    assert len({a.worker for a in after}) == 2  # refused by both workers
    assert codes.get(200, 0) > 0  # the ones before it were served


def test_a_keys_request_limit_is_exact_across_both_workers(stack):
    """200 requests at once with a key of 40 a minute: exactly 40 allowed in all. Both
    workers answer; whichever admitted none refused because of the other's count (alone,
    it would have admitted 40), and if both admitted some the exact total says they
    counted in one window: either way the count is shared."""
    limit = 40
    key = create_key(stack.url, limits={"requests_per_minute": limit})
    calls = [_request("GET", stack.url + "/v1/models", headers={"X-API-Key": key["key"]})] * 200
    answers = asyncio.run(_gather(calls, 200))
    codes = _codes(answers)
    by_worker = collections.Counter((a.worker, a.status) for a in answers)
    print(f"requests_per_minute={limit}, 200 at once: {codes}, per worker {dict(by_worker)}")
    assert codes == {200: limit, 429: 200 - limit}
    assert len({a.worker for a in answers}) == 2
    refused = next(a for a in answers if a.status == 429)
    assert orjson.loads(refused.body)["error"]["code"] == "rate_limited"
