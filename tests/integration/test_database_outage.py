"""The database failing under load, on the real stack: `serve --workers 2` over the
session's PostgreSQL and a private Redis (docs/reliability.md, "Database outage").

Killed (kill -9 of the server and its backends) for 10 s at 20 req/s: keys and users the
workers hold keep working (200), a key never used before gets 503 + Retry-After with code
`database_unavailable`, admin writes and logins get 503, readiness stays 200 "degraded"
naming the database, and nothing is ever a 500. Restarted: a credential read from SQL
works again within 2 s of the server answering. Hung (SIGSTOP: connections accepted, no
answers): no request waits longer than the database deadline (3 s) plus a margin, and held
keys keep working."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from procs.postgres_server import _children
from procs.wait import wait_for

from .conftest import ADMIN, PostgresServer
from .stack import (
    Paced,
    Sent,
    Stack,
    create_key,
    create_user,
    fresh,
    from_both_workers,
    ledger_requests,
    login,
    predict,
    private_redis,
)

pytestmark = [pytest.mark.integration, pytest.mark.timing]
OUTAGE_S = 10.0
RATE = 20.0  # requests per second during the outage, all kinds together
DEADLINE_S = 3.0  # database.deadline_s, the default
READY_CACHE_S = 1.0  # triton.ready_cache_s: a ready answer is reused this long
# The kinds of request in turn, half of them with the held key; a login every 2 s only
# (logins are throttled per username and client: 10 a minute).
SCHEDULE = ["held", "unheld", "held", "admin", "held", "ready", "held", "jwt"] * 5
SCHEDULE[-1] = "login"


@pytest.fixture(scope="module")
def outage_stack(triton, repository, postgres_server, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("db-outage")
    if not postgres_server.running:
        postgres_server.start()
    name = postgres_server.create_database()
    redis = private_redis(tmp)
    try:
        stack = Stack(
            triton,
            repository,
            tmp,
            database_url=postgres_server.url(name),
            redis_url=redis.url,
            workers=2,
        )
        yield stack
        stack.stop()
    finally:
        redis.kill()
        if not postgres_server.running:
            postgres_server.start()
        postgres_server.drop_database(name)


class Credentials:
    """A key and a user both workers hold, a key neither has seen, for one scenario."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.held = create_key(url, name=f"held-{tag}")
        self.unheld = create_key(url, name=f"unheld-{tag}")  # never used before the outage
        create_user(url, f"outage-{tag}")
        self.username = f"outage-{tag}"
        self.bearer = {"Authorization": f"Bearer {login(url, self.username)['access_token']}"}
        self.predicted = 0  # 200s with the held key, all told (the ledger must match)
        warm = from_both_workers(lambda: predict(url, self.held["key"]))
        assert {r.status_code for r in warm} == {200}
        self.predicted += len(warm)
        jwt = from_both_workers(lambda: fresh(url, "GET", "/v1/usage", headers=self.bearer))
        assert {r.status_code for r in jwt} == {200}

    def call(self, kind: str) -> httpx.Response:
        url = self.url
        if kind == "held":
            return predict(url, self.held["key"])
        if kind == "unheld":
            return fresh(url, "GET", "/v1/models", headers={"X-API-Key": self.unheld["key"]})
        if kind == "admin":
            body = {"name": "during-outage", "tier": "unlimited"}
            return fresh(url, "POST", "/v1/admin/keys", headers=ADMIN, json=body)
        if kind == "ready":
            return fresh(url, "GET", "/health/ready")
        if kind == "jwt":
            return fresh(url, "GET", "/v1/usage", headers=self.bearer)
        if kind == "login":
            body = {"username": self.username, "password": "a long enough passphrase"}
            return fresh(url, "POST", "/v1/auth/token", json=body)
        raise AssertionError(kind)


def _by_kind(sent: list[Sent]) -> dict[str, list[Sent]]:
    kinds: dict[str, list[Sent]] = collections.defaultdict(list)
    for s in sent:
        kinds[s.kind].append(s)
    return kinds


def _codes(sent: list[Sent]) -> dict[int, int]:
    return dict(collections.Counter(s.status for s in sent))


def _error_code(s: Sent) -> str | None:
    try:
        return json.loads(s.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _check_outage_answers(sent: list[Sent], since: float) -> dict[str, dict[int, int]]:
    """What the database being down must look like, kind by kind."""
    kinds = _by_kind(sent)
    summary = {kind: _codes(answers) for kind, answers in kinds.items()}
    assert all(s.status not in (0, 500) for s in sent), summary
    assert {s.status for s in kinds["held"]} == {200}, summary
    assert {s.status for s in kinds["jwt"]} == {200}, summary
    for kind in ("unheld", "admin", "login"):
        answers = kinds[kind]
        assert {s.status for s in answers} == {503}, (kind, summary)
        assert all(_error_code(s) == "database_unavailable" for s in answers), kind
        assert all(int(s.headers["retry-after"]) >= 1 for s in answers), kind
    for s in kinds["ready"]:
        assert s.status == 200, summary
        body = json.loads(s.body)
        if s.started < since + READY_CACHE_S + 0.5 and body["status"] == "ready":
            continue  # a ready answer from just before the failure, reused (ReadinessCache)
        assert body["status"] == "degraded", body
        assert body["components"]["database"]["status"] == "down", body
        assert body["components"]["database"]["required"] is False
    return summary


def _until_both_workers(call: Callable[[], httpx.Response], timeout_s: float = 30) -> float:
    """Seconds until `call` (a new connection each time) has answered 200 from both
    workers; no other answer than 200 or 503 meanwhile."""
    started = time.monotonic()
    seen: set[str] = set()
    while len(seen) < 2:
        assert time.monotonic() - started < timeout_s, f"only {seen} answered 200"
        r = call()
        assert r.status_code in (200, 201, 503), (r.status_code, r.text)
        if r.status_code in (200, 201):
            seen.add(r.headers["X-Infergate-Worker"])
        else:
            time.sleep(0.02)
    return time.monotonic() - started


def test_database_killed_for_ten_seconds_under_load(outage_stack, postgres_server):
    url = outage_stack.url
    creds = Credentials(url, "killed")
    postgres_server.kill()
    killed_at = time.monotonic()
    try:
        load = Paced(RATE, SCHEDULE, creds.call)
        time.sleep(OUTAGE_S)  # a duration: the outage, under load
        sent = load.stop()
    finally:
        postgres_server.start()
    # A credential read from SQL (the key no worker holds) and an admin write, again.
    unheld = {"X-API-Key": creds.unheld["key"]}
    new_key_s = _until_both_workers(lambda: fresh(url, "GET", "/v1/models", headers=unheld))
    write_s = _until_both_workers(
        lambda: fresh(url, "POST", "/v1/admin/keys", headers=ADMIN, json={"name": "after"})
    )
    during = [s for s in sent if s.started >= killed_at]
    summary = _check_outage_answers(during, killed_at)
    held = sorted(s.took for s in during if s.kind == "held")
    print(
        f"database killed {OUTAGE_S:.0f} s at {len(during) / OUTAGE_S:.0f} req/s: {summary}; "
        f"held-key answers p50 {held[len(held) // 2] * 1000:.0f} ms, slowest "
        f"{held[-1] * 1000:.0f} ms; after the restart a new "
        f"credential works in both workers in {new_key_s:.2f} s, admin writes in "
        f"{new_key_s + write_s:.2f} s"
    )
    assert new_key_s < 2.0
    # Usage counted while the database was down was kept and is written now.
    creds.predicted += sum(1 for s in during if s.kind == "held" and s.status == 200)
    wait_for(
        lambda: (
            ledger_requests(outage_stack.database_url, f"key:{creds.held['id']}") == creds.predicted
        ),
        "the ledger to catch up with the outage's requests",
        10,
        interval_s=0.2,
    )


def _postgres_processes(server: PostgresServer) -> list[int]:
    assert server.proc is not None
    return [server.proc.pid, *_children(server.proc.pid)]


def test_database_hung_bounds_every_request(outage_stack, postgres_server):
    url = outage_stack.url
    creds = Credentials(url, "hung")
    processes = _postgres_processes(postgres_server)
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    hung_at = time.monotonic()
    try:
        load = Paced(RATE, SCHEDULE, creds.call, threads=64)
        time.sleep(OUTAGE_S)  # a duration: the hang, under load
        sent = load.stop()
    finally:
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    unheld = {"X-API-Key": creds.unheld["key"]}
    recovered_s = _until_both_workers(lambda: fresh(url, "GET", "/v1/models", headers=unheld))
    during = [s for s in sent if s.started >= hung_at]
    summary = _check_outage_answers(during, hung_at)
    slowest = max(during, key=lambda s: s.took)
    over = [(s.kind, s.status, round(s.took, 2)) for s in during if s.took > DEADLINE_S]
    print(f"answers slower than the deadline: {over}")
    print(
        f"database hung {OUTAGE_S:.0f} s at {len(during) / OUTAGE_S:.0f} req/s: {summary}; "
        f"slowest answer {slowest.took:.2f} s ({slowest.kind}, {slowest.status}); a new "
        f"credential works in both workers {recovered_s:.2f} s after SIGCONT"
    )
    assert slowest.took < DEADLINE_S + 1.5
