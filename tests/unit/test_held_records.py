"""Key and user records held per worker (frontend/auth/held.py): used while young and
while their generation marker in the state store is the one they were loaded under; a
change anywhere gives a new marker, so every worker reloads on its next request. Then the
same through the app: one state-store read and no SQL per request, changes seen at once
by another worker, the marker read before the load, and the outages (state store down:
SQL read every time; database down: held records for `auth.outage_cache_s`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from frontend.auth.held import MARKER_TTL_S, UNKNOWN, HeldRecords
from frontend.container import Services, services_of
from frontend.errors import StateUnavailable
from frontend.settings import AuthSettings, DatabaseSettings
from frontend.state.memory import MemoryStore

from .clock import FakeClock, fake_monotonic
from .test_access import _break, as_key, bearer, login, new_key, new_user
from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client

HELD_S, OUTAGE_S = 30.0, 300.0


class CountingStore(MemoryStore):
    """The in-process store, noting every read and every marker written."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, tuple[str, ...]]] = []
        self.ttls: dict[str, int | None] = {}

    async def get(self, key: str) -> bytes | None:
        self.reads.append(("get", (key,)))
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads.append(("get_many", tuple(keys)))
        return await super().get_many(keys)

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool:
        self.ttls[key] = ttl_s
        return await super().put(key, value, ttl_s, only_if_absent)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, start=1000.0)


def _held(store: MemoryStore, held_s: float = HELD_S, outage_s: float = OUTAGE_S):
    return HeldRecords[str](store, "key", held_s, outage_s)


# --- HeldRecords --------------------------------------------------------------------------


def test_a_record_is_used_while_its_marker_is_unchanged_and_it_is_young(clock):
    async def run() -> None:
        held = _held(MemoryStore())
        [marker] = await held.markers(["a"])
        assert marker.startswith(b"-@")  # no change yet: no marker, only the epoch
        held.keep("a", "record", marker)
        entry = held.get("a")
        assert entry is not None and entry.record == "record"
        assert held.fresh(entry, marker)
        clock.now += HELD_S - 0.1
        assert held.fresh(entry, marker)
        clock.now += 0.2  # older than the hold: reloaded, whatever the marker says
        assert not held.fresh(entry, marker)
        assert not held.fresh(None, marker)

    asyncio.run(run())


def test_a_change_gives_a_new_marker_that_every_worker_sees(clock):
    """Two workers over one store: a bump in one makes the other's copy stale at once
    (and forgets this worker's own copy); each bump is a new marker, kept a day."""

    async def run() -> None:
        store = CountingStore()
        here, there = _held(store), _held(store)
        [before] = await there.markers(["a"])
        there.keep("a", "old", before)
        here.keep("a", "old", before)
        await here.bump(["a"])
        assert here.get("a") is None  # forgotten where the change was made
        [after] = await there.markers(["a"])
        assert after is not None and after != before
        assert not there.fresh(there.get("a"), after)  # stale in the other worker
        assert store.ttls["gen:key:a"] == MARKER_TTL_S == 86_400
        await here.bump(["a"])
        [again] = await there.markers(["a"])
        assert again not in (None, after)  # every change a new marker

    asyncio.run(run())


def test_markers_of_several_records_are_one_round_trip():
    async def run() -> None:
        store = CountingStore()
        held = HeldRecords[str](store, "user", HELD_S, OUTAGE_S)
        first = await held.markers(["a", "b", "c"])  # the first reader makes the epoch
        assert len(set(first)) == 1 and first[0].startswith(b"-@")  # no marker yet
        store.reads.clear()
        assert await held.markers(["a", "b", "c"]) == first
        names = ("gen:user:a", "gen:user:b", "gen:user:c", "gen:epoch")
        assert store.reads == [("get_many", names)]  # then: one round trip, nothing else

    asyncio.run(run())


def test_a_record_loaded_while_the_store_was_down_never_matches_a_marker(clock):
    async def run() -> None:
        held = _held(MemoryStore())
        held.keep("a", "record", UNKNOWN)
        entry = held.get("a")
        [marker] = await held.markers(["a"])  # the store is back: no marker
        assert not held.fresh(entry, marker)  # reloaded once, then held again
        assert not held.fresh(entry, b"0123456789abcdef")

    asyncio.run(run())


def test_a_flushed_store_makes_every_changed_record_reload(clock):
    async def run() -> None:
        store = MemoryStore()
        held = _held(store)
        await held.bump(["a"])  # a change: the record is loaded under its marker
        [marker] = await held.markers(["a"])
        held.keep("a", "record", marker)
        assert held.fresh(held.get("a"), marker)
        store._values.clear()  # what a FLUSHALL leaves: no marker, no epoch
        [flushed] = await held.markers(["a"])
        assert flushed != marker and not held.fresh(held.get("a"), flushed)

    asyncio.run(run())


def test_a_flush_after_a_change_reaches_a_record_held_before_the_change(clock):
    """The case the epoch is for: a worker holds a record loaded before any change (no
    marker); a change sets one, then Redis is flushed before that worker's next request.
    Without the epoch its copy ("no marker") would match the flushed store again."""

    async def run() -> None:
        store = MemoryStore()
        here, there = _held(store), _held(store)
        [before] = await there.markers(["a"])
        there.keep("a", "old", before)
        await here.bump(["a"])  # the change
        store._values.clear()  # then the flush, before `there` looks again
        [now] = await there.markers(["a"])
        assert not there.fresh(there.get("a"), now)  # reloaded: the change is seen

    asyncio.run(run())


def test_records_are_held_30_s_and_kept_5_minutes_in_a_database_outage():
    assert DatabaseSettings().record_cache_s == 30
    assert AuthSettings().outage_cache_s == 300


def test_in_an_outage_a_record_is_usable_for_the_outage_window_only(clock):
    held = _held(MemoryStore())
    assert not held.usable_in_outage(None)  # never held: nothing to serve
    held.keep("a", "record", None)
    clock.now += OUTAGE_S - 0.1
    assert held.usable_in_outage(held.get("a"))
    clock.now += 0.2
    assert not held.usable_in_outage(held.get("a"))
    # Held nothing at all when both the hold and the outage window are off.
    off = _held(MemoryStore(), held_s=0, outage_s=0)
    off.keep("a", "record", None)
    assert off.get("a") is None


def test_with_the_store_down_markers_fail_and_a_bump_still_forgets_here():
    async def run() -> None:
        store = MemoryStore()
        held = _held(store)
        held.keep("a", "record", None)
        _break(store)
        with pytest.raises(StateUnavailable):
            await held.markers(["a"])
        with pytest.raises(StateUnavailable):
            await held.bump(["a"])
        assert held.get("a") is None  # this worker's copy is gone even so

    asyncio.run(run())


# --- through the app ----------------------------------------------------------------------


def _services(client: TestClient) -> Services:
    services = services_of(client.app)
    assert services is not None
    return services


class Statements:
    """The SQL statements an app's engine runs, but those of its background loops (the
    routing reload, the usage ledger's flush)."""

    BACKGROUND = ("routing", "usage_ledger")

    def __init__(self, client: TestClient) -> None:
        self._engine = _services(client).database.engine.sync_engine
        self.seen: list[str] = []

    def _note(self, _conn, _cursor, statement, _params, _context, _many) -> None:
        if not any(table in statement for table in self.BACKGROUND):
            self.seen.append(statement)

    def __enter__(self) -> Statements:
        sqlalchemy.event.listen(self._engine, "before_cursor_execute", self._note)
        return self

    def __exit__(self, *_: object) -> None:
        sqlalchemy.event.remove(self._engine, "before_cursor_execute", self._note)


def break_database(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's database stops answering as a dead server would: the next call fails
    with the driver's OperationalError (the breaker opens, DatabaseUnavailable from then
    on) and the breaker's probe finds it still dead, until the test ends."""
    database = services.database

    def refused(*_: object, **__: object) -> None:
        raise OperationalError("connect", {}, ConnectionRefusedError("refused"))

    async def no_answer() -> None:
        raise OSError("refused")

    monkeypatch.setattr(database, "_sessions", refused)
    monkeypatch.setattr(database, "ping_once", no_answer)
    database.breaker.attach(no_answer)


def _ours(reads: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, tuple[str, ...]]]:
    return [r for r in reads if r != ("get", ("routing:changed",))]  # the routing poll


def test_a_held_jwt_user_costs_one_state_read_and_no_sql(tmp_path):
    """A token's revocations and its user's marker in one `get_many`; the user held."""
    store = CountingStore()
    client = _client(tmp_path, FakeTriton(), store=store)
    try:
        user = new_user(client, "hilda", tier="pro")
        token = login(client, "hilda")["access_token"]
        assert client.get("/v1/models", headers=bearer(token)).status_code == 200  # loaded
        with Statements(client) as sql:
            store.reads.clear()
            assert client.get("/v1/models", headers=bearer(token)).status_code == 200
        [(kind, names)] = _ours(store.reads)
        assert kind == "get_many" and names[2] == f"gen:user:{user['id']}"
        assert names[0].startswith("revoked:") and names[1].startswith("family_revoked:")
        assert sql.seen == []
    finally:
        client.__exit__(None, None, None)


def _two_workers(tmp_path) -> tuple[TestClient, TestClient]:
    """Two apps over one state store and one database: two workers of one install."""
    shared = {
        "store": MemoryStore(),
        "database": DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/shared.db"),
        "auth": AuthSettings(bootstrap_admin_key=ADMIN_KEY),
        "secret_key": "unit-test-server-secret-0123456789-abcdef",
    }
    return (
        _client(tmp_path / "one", FakeTriton(), **shared),
        _client(tmp_path / "two", FakeTriton(), **shared),
    )


def test_changes_made_in_one_worker_apply_at_once_in_another(tmp_path):
    one, two = _two_workers(tmp_path)
    try:
        key = new_key(one, tier="free")
        parent = new_key(one, tier="free")
        child = one.post("/v1/keys", json={"name": "c"}, headers=as_key(parent["key"])).json()
        new_user(one, "ines", tier="free")
        token = login(one, "ines")["access_token"]
        user_id = one.get("/v1/admin/users").json()["data"][0]["id"]
        users_key = one.post("/v1/keys", json={"name": "k"}, headers=bearer(token)).json()
        everyone = (
            as_key(key["key"]),
            as_key(child["key"]),
            bearer(token),
            as_key(users_key["key"]),
        )
        for headers in everyone:
            r = two.get("/v1/models", headers=headers)  # now held by worker two
            assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "10"
        # Re-tiered in worker one: worker two applies it on its next request.
        assert one.patch(f"/v1/admin/keys/{key['id']}", json={"tier": "pro"}).status_code == 200
        assert one.patch(f"/v1/admin/keys/{parent['id']}", json={"tier": "pro"}).status_code == 200
        assert one.patch(f"/v1/admin/users/{user_id}", json={"tier": "pro"}).status_code == 200
        for headers in everyone:
            assert two.get("/v1/models", headers=headers).headers["X-RateLimit-Limit"] == "100"
        # Revoked or disabled in worker one: refused by worker two on its next request.
        assert one.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
        assert one.delete(f"/v1/admin/keys/{parent['id']}").status_code == 200
        assert one.patch(f"/v1/admin/users/{user_id}", json={"disabled": True}).status_code == 200
        for headers in everyone:
            assert two.get("/v1/models", headers=headers).status_code == 401
    finally:
        one.__exit__(None, None, None)
        two.__exit__(None, None, None)


def test_the_marker_is_read_before_the_record_is_loaded(tmp_path, monkeypatch):
    """A revoke that lands between this worker's marker read and its SQL load: the
    request is served with what was loaded (it came first), and the next one reloads. Read
    the other way round, the stale record would be held under the new marker."""
    client = _client(tmp_path, FakeTriton())
    services = _services(client)
    database, keys = services.database, services.access.keys
    try:
        key = new_key(client)
        real_run = database.run
        raced = []

        async def run_then_revoke(operation, work):
            result = await real_run(operation, work)
            if operation == "key.auth" and not raced:
                raced.append(operation)  # the revoke commits after the load read the row
                await keys.revoke(key["id"], None, actor="test", request_id=None)
            return result

        monkeypatch.setattr(database, "run", run_then_revoke)
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        assert raced
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 401
    finally:
        client.__exit__(None, None, None)


def test_with_the_state_store_down_keys_are_read_from_sql_every_time(tmp_path):
    """No marker can be read, so nothing held is trusted: each request reads SQL, and a
    revoke made during the outage (its broadcast lost) is refused at once."""
    store = MemoryStore()
    client = _client(tmp_path, FakeTriton(), store=store)
    try:
        key = new_key(client, tier="pro")
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200  # held
        _break(store)
        with Statements(client) as sql:
            assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        assert [s for s in sql.seen if "FROM api_keys" in s], sql.seen
        assert client.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 401
    finally:
        client.__exit__(None, None, None)


def test_with_the_database_down_a_held_key_works_for_the_outage_window(tmp_path, monkeypatch):
    """Held longer than `record_cache_s` (so the database is asked, and does not answer):
    served while younger than `outage_cache_s`, then 503; a marker that moved meanwhile
    is a change this worker cannot read, so the held copy is not used."""
    client = _client(tmp_path, FakeTriton())
    services = _services(client)
    keys = services.access.keys
    auth = services.settings.auth
    try:
        key, other = new_key(client), new_key(client)
        for k in (key, other):
            assert client.get("/v1/models", headers=as_key(k["key"])).status_code == 200
        break_database(services, monkeypatch)
        for k in (key, other):
            held = keys.held.get(k["id"])
            assert held is not None
            held.at -= services.settings.database.record_cache_s + 1  # due for a reload
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        keys.held.get(key["id"]).at -= auth.outage_cache_s  # type: ignore[union-attr]
        late = client.get("/v1/models", headers=as_key(key["key"]))
        assert late.status_code == 503 and late.json()["error"]["code"] == "database_unavailable"
        # Another worker changed `other` (its marker moved) before the database went down.
        client.portal.call(services.store.put, f"gen:key:{other['id']}", b"changed")
        moved = client.get("/v1/models", headers=as_key(other["key"]))
        assert moved.status_code == 503 and moved.headers["Retry-After"] == "1"
    finally:
        client.__exit__(None, None, None)


def test_with_redis_and_the_database_down_a_held_key_still_works(tmp_path, monkeypatch):
    store = MemoryStore()
    client = _client(tmp_path, FakeTriton(), store=store)
    services = _services(client)
    try:
        key, unseen = new_key(client, tier="pro"), new_key(client, tier="pro")
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        break_database(services, monkeypatch)
        _break(store)
        assert client.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        refused = client.get("/v1/models", headers=as_key(unseen["key"]))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "database_unavailable"
    finally:
        client.__exit__(None, None, None)


def test_a_change_not_broadcast_reaches_the_other_workers_within_the_hold(tmp_path, monkeypatch):
    """Redis failing just as the change is made: the change is in SQL, but no new marker
    tells worker two, which serves its held copy until the hold (30 s) ends."""
    one, two = _two_workers(tmp_path)
    try:
        key = new_key(one, tier="pro")
        assert two.get("/v1/models", headers=as_key(key["key"])).status_code == 200  # held

        async def lost(record_ids: list[str]) -> None:
            raise StateUnavailable("shared state is unreachable")

        monkeypatch.setattr(_services(one).access.keys.held, "bump", lost)
        assert one.delete(f"/v1/admin/keys/{key['id']}").status_code == 200  # still done
        assert two.get("/v1/models", headers=as_key(key["key"])).status_code == 200
        held = _services(two).access.keys.held.get(key["id"])
        assert held is not None
        held.at -= _services(two).settings.database.record_cache_s  # the hold is over
        assert two.get("/v1/models", headers=as_key(key["key"])).status_code == 401
    finally:
        one.__exit__(None, None, None)
        two.__exit__(None, None, None)
