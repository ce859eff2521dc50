"""Login budgets (frontend/auth/login_throttle.py) through the real app and route, with
the in-process store: per username + client, per client, per username and global; known
clients; and no hash for an attempt over budget. The peer address of each request is
set by a small ASGI shim from a test header (the TestClient has one fixed address)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest
from fastapi.testclient import TestClient

from frontend.app import create_app
from frontend.container import services_of
from frontend.errors import InfergateError
from frontend.services import access as service
from frontend.settings import AuthSettings, Settings, TritonSettings

from .cards import write_cards
from .test_frontend_errors import ADMIN_KEY, FakeTriton, over_fake

PASSWORD = "correct horse battery"
TOKEN = "/v1/auth/token"


class PeerFromHeader:
    """Pure ASGI: the request's client address from `X-Test-Peer` (tests only)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer is not None:
                scope = {**scope, "client": (peer.decode(), 4242)}
        await self.app(scope, receive, send)


class Gateway:
    def __init__(self, tmp_path, **auth) -> None:
        settings = Settings(
            environment="test",
            triton=TritonSettings(model_repository=write_cards(tmp_path / "repo")),
            auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, **auth),
        )
        self.app = create_app(settings, over_fake(settings, FakeTriton()))
        self.http = TestClient(
            PeerFromHeader(self.app),
            raise_server_exceptions=False,
            headers={"X-API-Key": ADMIN_KEY},
        )
        self.http.__enter__()
        services = services_of(self.app)
        assert services is not None
        self.access = services.access
        self.refusals: set[str] = set()
        # Count what reaches argon2: an attempt over budget must never get here.
        passwords = self.access.users._passwords
        self.hashed = 0
        lock = threading.Lock()  # _verify runs in worker threads
        real = passwords._verify

        def counting(stored, password):
            with lock:
                self.hashed += 1
            return real(stored, password)

        passwords._verify = counting

    def user(self, name: str) -> None:
        r = self.http.post("/v1/admin/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text

    def login(self, name: str, peer: str, password: str = PASSWORD) -> int:
        r = self.http.post(
            TOKEN,
            json={"username": name, "password": password},
            headers={"X-API-Key": "", "X-Test-Peer": peer},
        )
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            self.refusals.add(r.json()["error"]["message"])
        return r.status_code

    def close(self) -> None:
        self.http.__exit__(None, None, None)


@pytest.fixture
def gateway_factory(tmp_path):
    made: list[Gateway] = []

    def make(**auth) -> Gateway:
        made.append(Gateway(tmp_path / str(len(made)), **auth))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


def test_guesses_from_one_client_do_not_lock_the_owner_out(gateway_factory):
    gw = gateway_factory(login_attempts_per_minute=3)
    gw.user("carol")
    guesses = [gw.login("carol", "203.0.113.66", "wrong password!") for _ in range(5)]
    assert guesses == [401, 401, 401, 429, 429]
    assert gw.hashed == 3  # the two refused guesses never reached argon2
    # Before: the budget was per username, and this was a 429 for a minute.
    assert gw.login("carol", "198.51.100.7") == 200
    assert gw.login("carol", "203.0.113.66") == 429  # the guesser's own budget stays spent
    assert gw.refusals == {"too many login attempts; retry later"}  # names no budget


def test_spraying_usernames_from_one_client_is_limited_before_hashing(gateway_factory):
    gw = gateway_factory(login_client_attempts_per_minute=5)
    codes = [gw.login(f"name{i}", "203.0.113.9", "wrong password!") for i in range(20)]
    assert codes == [401] * 5 + [429] * 15
    assert gw.hashed == 5  # before: 20 hashes, one per name, no limit at all
    assert gw.login("name0", "203.0.113.10", "wrong password!") == 401  # another client


def test_per_username_budget_spares_a_client_known_for_that_user(gateway_factory):
    gw = gateway_factory(login_user_attempts_per_hour=3)
    gw.user("dora")
    assert gw.login("dora", "198.51.100.7") == 200  # the owner, now known from here (1 of 3)
    # Guesses from many addresses, one each: the per-client budgets never bind.
    codes = [gw.login("dora", f"203.0.113.{i}", "wrong password!") for i in range(1, 6)]
    assert codes == [401, 401, 429, 429, 429]
    assert gw.login("dora", "198.51.100.7") == 200  # known: not stopped by the name's budget
    assert gw.login("dora", "198.51.100.8") == 429  # an unknown address of the owner's is


def test_global_budget_stops_a_distributed_flood_but_not_known_clients(gateway_factory):
    gw = gateway_factory(login_global_attempts_per_minute=4)
    gw.user("erik")
    assert gw.login("erik", "198.51.100.7") == 200  # 1 of 4
    flood = [gw.login(f"n{i}", f"203.0.113.{i}", "wrong password!") for i in range(1, 9)]
    assert flood == [401] * 3 + [429] * 5
    hashed = gw.hashed
    assert gw.login("erik", "198.51.100.7") == 200
    assert gw.hashed == hashed + 1
    assert gw.login("erik", "198.51.100.99") == 429


def test_known_clients_can_be_switched_off(gateway_factory):
    gw = gateway_factory(login_user_attempts_per_hour=2, login_known_client_days=0)
    gw.user("fay")
    assert [gw.login("fay", "198.51.100.7") for _ in range(3)] == [200, 200, 429]


def test_settings_bound_the_login_budgets():
    for field in (
        "login_attempts_per_minute",
        "login_client_attempts_per_minute",
        "login_user_attempts_per_hour",
        "login_global_attempts_per_minute",
        "login_hash_concurrency",
    ):
        with pytest.raises(ValueError):
            AuthSettings(**{field: 0})
        with pytest.raises(ValueError):
            AuthSettings(**{field: 10**9})
    with pytest.raises(ValueError):
        AuthSettings(login_max_waiting=-1)
    with pytest.raises(ValueError):
        AuthSettings(login_known_client_days=366)


def test_owner_logs_in_during_a_flood_and_refused_attempts_never_hash(gateway_factory):
    """A distributed flood of wrong passwords (a new address per attempt, random names:
    no per-client or per-name budget binds) against the real argon2 pool, while the
    owner logs in again from an address it logged in from before. The pool's admission
    refuses what would queue (503) and serves the known client first. Latency figures
    are printed, not asserted (a loaded 2-core machine can be slow, but the owner's
    logins must all succeed)."""
    # The worst case: no budget binds, only the pool's admission protects it.
    gw = gateway_factory(
        login_hash_concurrency=2, login_max_waiting=4, login_global_attempts_per_minute=10**6
    )
    gw.user("gus")
    assert gw.login("gus", "198.51.100.7") == 200  # known from now on
    access = gw.access

    async def attempt(name: str, peer: str, password: str) -> tuple[int, float]:
        start = time.perf_counter()
        try:
            await service.login(access, name, password, peer)
            status = 200
        except InfergateError as error:
            status = error.status
        return status, time.perf_counter() - start

    async def owner_alone(n: int) -> list[float]:
        return [(await attempt("gus", "198.51.100.7", PASSWORD))[1] for _ in range(n)]

    async def under_flood(n_owner: int) -> tuple[list[tuple[int, float]], list[int]]:
        stop = asyncio.Event()
        outcomes: list[int] = []

        async def attacker(worker: int) -> None:
            for i in range(400):  # bounded; normally stopped much earlier
                if stop.is_set():
                    return
                status, _ = await attempt(f"x{worker}-{i}", f"10.{worker}.{i}.1", "wrong!")
                outcomes.append(status)
                if status != 401:
                    await asyncio.sleep(0.01)  # refused at once: do not spin the loop

        attackers = [asyncio.create_task(attacker(w)) for w in range(12)]
        deadline = time.monotonic() + 30
        while gw.hashed < 6 and time.monotonic() < deadline:  # the flood is on
            await asyncio.sleep(0.02)
        owner = []
        for _ in range(n_owner):
            owner.append(await attempt("gus", "198.51.100.7", PASSWORD))
        stop.set()
        await asyncio.gather(*attackers)
        return owner, outcomes

    alone = gw.http.portal.call(owner_alone, 3)
    hashed_before = gw.hashed
    owner, outcomes = gw.http.portal.call(under_flood, 5)
    flood_ms = [seconds * 1000 for _, seconds in owner]
    print(
        f"\nowner login alone: median {statistics.median(alone) * 1000:.0f} ms; "
        f"during the flood: median {statistics.median(flood_ms):.0f} ms, "
        f"worst {max(flood_ms):.0f} ms; flood attempts {len(outcomes)}: "
        f"{outcomes.count(401)} hashed (401), {outcomes.count(503)} refused (503), "
        f"{outcomes.count(429)} over budget (429)"
    )
    assert [status for status, _ in owner] == [200] * 5
    assert outcomes.count(503) > 0  # the pool's admission did refuse attempts ...
    # ... and only the attempts answered 401 (and the owner's) ran argon2.
    assert gw.hashed - hashed_before == outcomes.count(401) + len(owner)
