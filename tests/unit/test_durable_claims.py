"""Promises of the durable-state pages (database, operations, access control, the API's
error table and usage routes) that no other unit test held, each through the real code:
the database settings and connections, the embedded file, the in-memory database of an
app built without `serve`, the drivers refused, the database's breaker and its metrics,
the ledger's metrics, the intervals of the background writes, the last-used times, token
revocations during a Redis outage, what a database outage refuses, and a key's own
limits through the app."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import stat
import time
import types
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from frontend import breaker as breaker_module
from frontend import container as container_module
from frontend.auth import keys as keys_module
from frontend.container import Services, services_of
from frontend.db import cli
from frontend.db import database as database_module
from frontend.db.database import MEMORY_URL, Database
from frontend.db.import_redis import masked
from frontend.db.tables import ApiKeyRow
from frontend.errors import DatabaseUnavailable
from frontend.observability.metrics import Metrics
from frontend.routing import router as router_module
from frontend.settings import AuthSettings, DatabaseSettings, Settings
from frontend.state.memory import MemoryStore
from frontend.usage.ledger import UsageLedger

from .test_access import _break, as_key, bearer, login, new_key, new_user
from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client, assert_envelope
from .test_held_records import break_database
from .test_key_options import CHAT, _later, _start
from .test_usage_ledger import MAY_1, _db

ROOT = Path(__file__).resolve().parents[2]
PREDICT = "/v1/models/intent/predict"
SECRET = "unit-test-server-secret-0123456789-abcdef"
PG_URL = "postgresql+asyncpg://infergate:s3cretpw@db.example:5432/infergate"


def _services(client: TestClient) -> Services:
    services = services_of(client.app)  # type: ignore[arg-type]
    assert services is not None
    return services


def _portal(client: TestClient) -> Any:
    """The started app's event loop, to run its own coroutines on."""
    assert client.portal is not None
    return client.portal


def _exported(metrics: Metrics, line: str) -> bool:
    return line in metrics.render().decode().splitlines()


def _close(*clients: TestClient) -> None:
    for client in clients:
        client.__exit__(None, None, None)


# --- database.md › Settings, PostgreSQL -----------------------------------------------------

# The table of database.md › Settings, as it reads.
DOCUMENTED_DEFAULTS: dict[str, float | None] = {
    "URL": None,
    "POOL_SIZE": 10,
    "MAX_OVERFLOW": 10,
    "STATEMENT_TIMEOUT_S": 2.0,
    "DEADLINE_S": 3.0,
    "CONNECT_TIMEOUT_S": 1.0,
    "RECORD_CACHE_S": 30,
    "USAGE_FLUSH_S": 1.0,
}


def test_every_database_setting_is_in_the_table_with_its_default():
    page = (ROOT / "docs" / "database.md").read_text()
    table = dict(re.findall(r"^\| `INFERGATE_DATABASE__(\w+)` \| ([^|]+?) \|", page, re.M))
    assert set(table) == {name.upper() for name in DatabaseSettings.model_fields}
    defaults = DatabaseSettings()
    for name, value in DOCUMENTED_DEFAULTS.items():
        assert getattr(defaults, name.lower()) == value, name
        if value is None:
            assert table[name].startswith("none"), name
        else:
            assert float(table[name]) == value, name


def _recording(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[dict[str, Any]]:
    """The keyword arguments of every engine `module` creates (the engines are real)."""
    seen: list[dict[str, Any]] = []
    real = module.create_async_engine

    def create(url: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(url, **kwargs)

    monkeypatch.setattr(module, "create_async_engine", create)
    return seen


def test_postgres_connections_are_bounded_and_migrations_have_no_statement_timeout(monkeypatch):
    """The app's pool: 10 + 10 connections, each checked before use and replaced after
    five minutes, each with its own `statement_timeout` (2 s) and a 1 s connect; a pool
    wait bounded by the 3 s deadline. The engine of `db upgrade` has no statement
    timeout, so a long migration is not cut short."""
    served = _recording(monkeypatch, database_module)
    engine = database_module.engine_for(PG_URL, DatabaseSettings())
    [kw] = served
    assert (kw["pool_size"], kw["max_overflow"], kw["pool_timeout"]) == (10, 10, 3.0)
    assert kw["pool_pre_ping"] is True and kw["pool_recycle"] == 300
    assert kw["connect_args"]["timeout"] == 1.0
    assert kw["connect_args"]["server_settings"]["statement_timeout"] == "2000"

    migrating = _recording(monkeypatch, cli)
    admin = cli.admin_engine(PG_URL, DatabaseSettings())
    [kw] = migrating
    assert "statement_timeout" not in kw["connect_args"].get("server_settings", {})
    assert "command_timeout" not in kw["connect_args"]
    assert kw["connect_args"]["timeout"] == 1.0  # the connect stays bounded
    asyncio.run(engine.dispose())
    asyncio.run(admin.dispose())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://infergate:s3cretpw@db.example/infergate",
        "postgresql+psycopg://infergate:s3cretpw@db.example/infergate",
        "mysql+aiomysql://infergate:s3cretpw@db.example/infergate",
        "sqlite:///infergate.db",
        "not a database url",
    ],
)
def test_a_driver_the_app_does_not_ship_is_refused_with_a_message(url):
    settings = Settings(environment="dev", database=DatabaseSettings(url=url))
    with pytest.raises(cli.CommandError, match=r"must start with postgresql\+asyncpg://") as no:
        cli.resolve_url(settings)
    assert "s3cretpw" not in str(no.value)
    good = Settings(environment="dev", database=DatabaseSettings(url=PG_URL))
    assert cli.resolve_url(good) == PG_URL


def test_the_database_url_is_a_secret_shown_with_its_password_masked():
    assert cli.shown(PG_URL) == "postgresql+asyncpg://infergate:***@db.example:5432/infergate"
    assert masked("redis://:s3cretpw@old-redis:6379/0") == "redis://:***@old-redis:6379/0"
    settings = Settings(environment="dev", database=DatabaseSettings(url=PG_URL))
    assert "s3cretpw" not in repr(settings) and "s3cretpw" not in str(settings.model_dump())


def test_db_upgrade_takes_a_revision_and_each_command_reports_in_one_line(
    tmp_path, monkeypatch, capsys
):
    for name in [n for n in os.environ if n.startswith("INFERGATE_")]:
        monkeypatch.delenv(name)
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("INFERGATE_DATABASE__URL", url)

    def command(*args: str) -> str:
        parser = argparse.ArgumentParser()
        cli.add_parser(parser.add_subparsers(dest="command"))
        assert cli.main(parser.parse_args(["db", *args])) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1, out
        return out

    assert "upgraded from an empty database to 0001" in command("upgrade", "--revision", "0001")
    assert "revision 0001, head 0004 (run `python -m frontend db upgrade`)" in command("current")
    assert "upgraded from 0001 to 0004" in command("upgrade")
    assert "revision 0004, head 0004 (up to date)" in command("current")
    assert "downgraded from 0004 to base" in command("downgrade", "base")


# --- database.md › The embedded default ----------------------------------------------------


def test_the_embedded_file_is_private_and_runs_in_wal_mode(tmp_path, monkeypatch):
    """`serve` without a URL outside prod: `.infergate/infergate.db` under the directory
    it starts in, in a 0700 directory, the file 0600; SQLite in WAL mode."""
    monkeypatch.chdir(tmp_path)
    # Set, then removed: monkeypatch then also undoes what prepare_database puts there.
    monkeypatch.setenv("INFERGATE_DATABASE__URL", "unset")
    monkeypatch.delenv("INFERGATE_DATABASE__URL")
    url = cli.prepare_database(Settings(environment="dev"))
    folder = tmp_path.resolve() / ".infergate"
    path = folder / "infergate.db"
    assert url == f"sqlite+aiosqlite:///{path}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def journal_mode() -> tuple[str, dict[str, int]]:
        db = Database(url, DatabaseSettings(), Metrics())
        try:
            mode = await db.run("test", lambda s: s.scalar(text("PRAGMA journal_mode")))
            # A write, so that SQLite makes its -wal and -shm files beside the database.
            await db.run(
                "test",
                lambda s: s.execute(text("UPDATE alembic_version SET version_num = version_num")),
            )
            beside = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.glob("*-*")}
            return mode, beside
        finally:
            await db.close()

    mode, beside = asyncio.run(journal_mode())
    assert mode == "wal"
    assert beside == {"infergate.db-wal": 0o600, "infergate.db-shm": 0o600}


def test_an_app_built_without_serve_keeps_its_records_in_memory_for_its_life(tmp_path):
    """No URL and no `serve`: an in-memory SQLite database that ends with the app (the
    same secret, so only the database decides)."""
    first = _client(tmp_path / "first", FakeTriton(), secret_key=SECRET)
    try:
        assert _services(first).database.url == MEMORY_URL
        key = new_key(first)
        assert first.get("/v1/models", headers=as_key(key["key"])).status_code == 200
    finally:
        _close(first)
    again = _client(tmp_path / "again", FakeTriton(), secret_key=SECRET)
    try:
        assert again.get("/v1/admin/keys").json()["data"] == []
        assert again.get("/v1/models", headers=as_key(key["key"])).status_code == 401
    finally:
        _close(again)


# --- access-control › Database down: the breaker, its probe and metrics --------------------


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_after_a_failed_call_only_a_probe_every_quarter_second_calls_the_database(monkeypatch):
    """The request that finds the database hung waits out the deadline; the next ones
    never call it (503 at once, counted as `skipped`); a probe every 0.25 s finds it back;
    `infergate_database_up` follows, and each transition is logged once."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float, result: object = None) -> object:
        slept.append(delay)
        await real_sleep(0.01)
        return result

    fake_asyncio = types.SimpleNamespace(
        **{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("__")}
    )
    fake_asyncio.sleep = recorded_sleep
    monkeypatch.setattr(breaker_module, "asyncio", fake_asyncio)  # the probe's pauses
    lines = LogLines()
    logger = logging.getLogger("infergate.database")
    logger.addHandler(lines)
    metrics = Metrics()
    calls = pings = 0

    async def hung(session: Any) -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # a SIGSTOPped server: connected, never answering

    async def ping() -> None:
        nonlocal pings
        pings += 1
        if pings <= 3:
            raise OSError("connection refused")

    async def scenario() -> None:
        # A short deadline: the 3 s default is held over a hung PostgreSQL by
        # tests/integration/test_database_outage.py.
        db = Database(MEMORY_URL, DatabaseSettings(deadline_s=0.1), metrics)
        db.breaker.attach(ping)
        try:
            assert _exported(metrics, "infergate_database_up 1.0")
            with pytest.raises(DatabaseUnavailable):
                await db.run("key.auth", hung)
            assert calls == 1 and not db.breaker.up
            for _ in range(20):
                with pytest.raises(DatabaseUnavailable):
                    await db.run("key.auth", hung)
            assert calls == 1  # none of the 20 reached the database
            assert _exported(metrics, "infergate_database_up 0.0")
            assert _exported(
                metrics,
                'infergate_database_errors_total{error="TimeoutError",operation="key.auth"} 1.0',
            )
            assert _exported(
                metrics,
                'infergate_database_errors_total{error="skipped",operation="key.auth"} 20.0',
            )
            async with asyncio.timeout(10):
                while not db.breaker.up:
                    await real_sleep(0.005)
            assert pings == 4  # three refused, then one answer
            assert _exported(metrics, "infergate_database_up 1.0")
            assert await db.run("test", lambda s: s.scalar(text("SELECT 1"))) == 1
        finally:
            await db.close()

    try:
        asyncio.run(scenario())
    finally:
        logger.removeHandler(lines)
    assert slept == [0.25] * 4
    assert lines.messages == ["database unreachable", "database reachable again"]


def test_the_usage_ledger_exports_its_pending_and_dropped_rows():
    async def scenario() -> None:
        metrics = Metrics()
        db = await _db(metrics)
        ledger = UsageLedger(db, 1.0, metrics, max_rows=2)
        for minute in range(3):
            ledger.add("key:a", "key:a", "intent", "1", items=1, at=MAY_1 + 60 * minute)
        assert _exported(metrics, "infergate_usage_ledger_pending_rows 3.0")
        db.fail = 1
        with pytest.raises(DatabaseUnavailable):
            await ledger.flush()
        assert _exported(metrics, "infergate_usage_ledger_pending_rows 2.0")
        assert _exported(metrics, "infergate_usage_ledger_dropped_rows_total 1.0")
        await ledger.flush()
        assert _exported(metrics, "infergate_usage_ledger_pending_rows 0.0")
        await db.close()

    asyncio.run(scenario())


def test_with_the_database_up_readiness_names_it_up_and_not_required(tmp_path):
    client = _client(tmp_path, FakeTriton())
    try:
        ready = client.get("/health/ready", headers={})
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        database = ready.json()["components"]["database"]
        assert (database["status"], database["required"]) == ("up", False)
    finally:
        _close(client)


def test_with_the_database_down_reports_and_routing_changes_are_503(tmp_path, monkeypatch):
    """api.md: "the database unreachable for ... an admin write or a report": the usage
    reports, the audit log, the routing history and routing changes; what needs no
    database (a held key, its windows) still answers."""
    client = _client(tmp_path, FakeTriton())
    try:
        key = new_key(client, tier="pro")
        caller = as_key(key["key"])
        assert client.get("/v1/models", headers=caller).status_code == 200  # held
        break_database(_services(client), monkeypatch)
        refused = [
            client.get("/v1/admin/usage"),
            client.get("/v1/usage", params={"ledger": "true"}, headers=caller),
            client.get("/v1/admin/audit"),
            client.get("/v1/admin/routing/intent/history"),
            client.put("/v1/admin/routing/intent", json={"default": "1"}),
            client.delete("/v1/admin/routing/intent"),
        ]
        for r in refused:
            assert_envelope(r, 503, "database_unavailable")
            assert r.headers["Retry-After"] == "1"
        plain = client.get("/v1/usage", headers=caller)
        assert plain.status_code == 200 and "ledger" not in plain.json()
        assert client.post(PREDICT, json={"inputs": "hi"}, headers=caller).status_code == 200
    finally:
        _close(client)


# --- the background writes and their intervals ---------------------------------------------


def _idle_loops(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, Callable[[], Any]]]:
    """Records the periodic loops the container starts (`_every(interval, work)`), and
    runs none of them: the test calls their work itself."""
    started: list[tuple[float, Callable[[], Any]]] = []

    def every(interval_s: float, work: Callable[[], Any]) -> Coroutine[Any, Any, Any]:
        started.append((interval_s, work))
        return asyncio.Event().wait()

    monkeypatch.setattr(container_module, "_every", every)
    return started


def test_the_background_writes_run_at_their_documented_intervals(tmp_path, monkeypatch):
    """Last use written every 5 s; usage every second (`INFERGATE_DATABASE__USAGE_FLUSH_S`),
    up to 100 000 rows kept unwritten; routing announcements read every 0.5 s and the
    routing reloaded from SQL every 5 s."""
    started = _idle_loops(monkeypatch)
    client = _client(tmp_path, FakeTriton())
    try:
        services = _services(client)
        assert (5.0, services.access.keys.write_last_used) in started
        assert services.ledger._interval_s == 1.0
        assert services.ledger._max_rows == 100_000  # pending rows kept through an outage
        assert services.router._poll_s == 0.5
        assert services.router._reload_s == router_module.RELOAD_S == 5.0
    finally:
        _close(client)


def _workers(tmp_path: Path, *stores: Any) -> list[TestClient]:
    """Apps over one database file and one secret: workers of one install, each over its
    own view of the shared state."""
    return [
        _client(
            tmp_path / f"worker{i}",
            FakeTriton(),
            store=store,
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/shared.db"),
            auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
            secret_key=SECRET,
        )
        for i, store in enumerate(stores)
    ]


def test_last_use_is_written_at_most_once_a_minute_per_key_and_shown_at_once(tmp_path, monkeypatch):
    assert AuthSettings().last_used_interval_s == 60
    now = [1_700_000_000.0]
    monkeypatch.setattr(keys_module, "time", types.SimpleNamespace(time=lambda: now[0]))
    started = _idle_loops(monkeypatch)
    store = MemoryStore()
    one, two = _workers(tmp_path, store, store)
    try:
        keys = _services(one).access.keys
        assert (5.0, keys.write_last_used) in started
        key = new_key(one)
        caller = as_key(key["key"])

        def stored() -> float | None:
            row = _portal(one).call(
                _services(one).database.run, "test", lambda s: s.get(ApiKeyRow, key["id"])
            )
            return row.last_used_at

        def shown(worker: TestClient) -> float | None:
            return worker.get(f"/v1/admin/keys/{key['id']}").json()["last_used_at"]

        def use_then_write(at: float) -> None:
            now[0] = at
            assert one.get("/v1/models", headers=caller).status_code == 200
            _portal(one).call(keys.write_last_used)

        start = now[0]
        assert one.get("/v1/models", headers=caller).status_code == 200
        assert shown(one) == start  # the worker that saw it, at once
        assert stored() is None and shown(two) is None  # not written yet
        _portal(one).call(keys.write_last_used)  # the 5 s loop's work
        assert stored() == start and shown(two) == start
        use_then_write(start + 59)
        assert stored() == start  # within the minute: not written again
        use_then_write(start + 60)
        assert stored() == start + 60 and shown(two) == start + 60
    finally:
        _close(one, two)


# --- access-control › Redis down: token revocations ----------------------------------------


class StoreView:
    """One worker's connection to the shared state: it can fail (`_break`) alone, and
    come back (`back`)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def back(self) -> None:
        for name in [n for n in vars(self) if n != "_store"]:
            delattr(self, name)


def test_token_revocations_made_during_a_redis_outage_are_seen_once_it_is_back(tmp_path):
    """Fail-open (the default): a worker that cannot reach Redis checks a JWT by its
    signature and its user in SQL, so a logout another worker recorded meanwhile is not
    seen there until Redis answers again."""
    shared = MemoryStore()
    mine, theirs = StoreView(shared), StoreView(shared)
    one, two = _workers(tmp_path, mine, theirs)
    try:
        new_user(one, "rita", tier="pro")
        token = bearer(login(one, "rita")["access_token"])
        assert one.get("/v1/models", headers=token).status_code == 200
        _break(mine)  # worker one loses Redis
        # There a logout cannot be recorded: 503, and the token stays good.
        assert_envelope(one.post("/v1/auth/logout", headers=token), 503, "state_unavailable")
        assert two.post("/v1/auth/logout", headers=token).status_code == 204
        assert two.get("/v1/models", headers=token).status_code == 401
        assert one.get("/v1/models", headers=token).status_code == 200  # not seen yet
        mine.back()  # Redis answers worker one again
        assert one.get("/v1/models", headers=token).status_code == 401
    finally:
        _close(one, two)


# --- api.md › errors: expiry; a key's own limits --------------------------------------------


def test_an_expired_key_is_told_it_has_expired_and_a_wrong_secret_is_not(tmp_path, monkeypatch):
    client = _start(tmp_path)
    try:
        key = new_key(client, expires_in_s=60)
        _later(monkeypatch, 61)
        expired = assert_envelope(
            client.get("/v1/models", headers=as_key(key["key"])), 401, "unauthorized"
        )
        assert "expired" in expired["message"]
        wrong = key["key"][:-4] + ("AAAA" if not key["key"].endswith("AAAA") else "BBBB")
        other = assert_envelope(
            client.get("/v1/models", headers=as_key(wrong)), 401, "unauthorized"
        )
        assert "expired" not in other["message"]
    finally:
        _close(client)


def test_a_keys_own_limits_apply_on_top_of_its_tier_whichever_is_stricter(tmp_path):
    client = _start(tmp_path)
    try:

        def predicts(key: dict, n: int) -> list[Any]:
            return [
                client.post(PREDICT, json={"inputs": f"hi {i}"}, headers=as_key(key["key"]))
                for i in range(n)
            ]

        # The key's 2 a minute, under the free tier's 10: the key's limit refuses.
        tight = predicts(new_key(client, tier="free", limits={"requests_per_minute": 2}), 3)
        assert [r.status_code for r in tight] == [200, 200, 429]
        assert_envelope(tight[-1], 429, "rate_limited")
        assert "X-RateLimit-Limit" in tight[-1].headers
        # The key's 50 a minute, over the tier's 10: the tier refuses.
        loose = predicts(new_key(client, tier="free", limits={"requests_per_minute": 50}), 11)
        assert [r.status_code for r in loose] == [200] * 10 + [429]
        assert loose[-1].headers["X-RateLimit-Limit"] == "10"
        # Tokens per minute, on the generation routes.
        budget = as_key(new_key(client, tier="free", limits={"tokens_per_minute": 100})["key"])
        over = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 200}, headers=budget)
        refused = assert_envelope(over, 429, "token_quota_exceeded")
        assert "per minute" in refused["message"]
        small = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}, headers=budget)
        assert small.status_code == 200, small.text
    finally:
        _close(client)


class GatedTriton(FakeTriton):
    """Each inference waits for `gate` once it is set up (the test holds a request in
    flight); `entered` says one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.entered: asyncio.Event | None = None

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        if self.gate is not None and self.entered is not None:
            self.entered.set()
            await self.gate.wait()
        return await super().infer(model, inputs, model_version, outputs, **kwargs)


def test_a_keys_max_concurrent_refuses_the_request_over_it_and_the_slot_comes_back(tmp_path):
    fake = GatedTriton()
    client = _client(tmp_path, fake)
    try:
        key = new_key(client, tier="unlimited", limits={"max_concurrent": 1})

        async def scenario() -> list[httpx.Response]:
            fake.gate, fake.entered = asyncio.Event(), asyncio.Event()
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=as_key(key["key"])
            ) as http:
                first = asyncio.ensure_future(http.post(PREDICT, json={"inputs": "one"}))
                async with asyncio.timeout(10):  # a deadline, not a duration
                    await fake.entered.wait()  # the first holds the key's only slot
                second = await http.post(PREDICT, json={"inputs": "two"})
                fake.gate.set()
                return [await first, second, await http.post(PREDICT, json={"inputs": "three"})]

        first, second, third = _portal(client).call(scenario)
        assert first.status_code == 200 and third.status_code == 200
        refused = assert_envelope(second, 429, "rate_limited")
        assert "max_concurrent" in refused["message"]
    finally:
        _close(client)


# --- api.md › GET /v1/usage and /v1/admin/usage: the range ---------------------------------


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_ledger_range_is_the_last_24_h_by_default_and_at_most_93_days(tmp_path):
    client = _client(tmp_path, FakeTriton())
    try:
        key = as_key(new_key(client)["key"])
        quarter = {"from": "2024-01-01T00:00:00Z", "to": "2024-04-03T00:00:00Z"}  # 93 days
        for path, headers in (("/v1/admin/usage", {}), ("/v1/usage", key)):

            def page(params: dict[str, Any], path: str = path, headers: Any = headers) -> Any:
                return client.get(path, params=params, headers=headers)

            default = page({"group_by": "day"}).json()
            default = default.get("ledger", default)
            start, end = _epoch(default["from"]), _epoch(default["to"])
            assert end - start == 86_400 and abs(end - time.time()) < 120, path
            assert page(quarter).status_code == 200, path
            longer = page({**quarter, "to": "2024-04-03T00:00:01Z"})
            refused = assert_envelope(longer, 422, "validation_error")
            assert "longer than 93 days" in refused["message"], path
            assert page({"limit": 1000}).status_code == 200, path
            assert_envelope(page({"limit": 1001}), 422, "validation_error")
    finally:
        _close(client)
