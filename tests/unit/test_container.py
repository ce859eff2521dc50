"""The services container (frontend/container.py): what start-up opens is closed in
reverse order on shutdown and when start-up fails half-way, the background loops start
only once everything is built and never outlive it; and routes get their services through
the dependency aliases, never from `app.state` (nor a request's string-keyed state)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import frontend
from frontend.app import create_app
from frontend.container import ServiceOverrides, Services, open_services, services_of
from frontend.db.database import Database
from frontend.db.tables import UsageRow
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings, Settings, TritonSettings
from frontend.state.memory import MemoryStore
from frontend.triton.client import TritonClient
from frontend.usage.ledger import UsageLedger

from .cards import write_cards
from .test_frontend_errors import FakeTriton

FRONTEND = Path(frontend.__file__).parent


def _running_others() -> int:
    """Tasks other than this one that have not ended."""
    return len([t for t in asyncio.all_tasks() - {asyncio.current_task()} if not t.done()])


class Journal:
    """What was closed or flushed, in order, and which other tasks were still running."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def note(self, event: str) -> None:
        self.events.append(f"{event} ({_running_others()} running)")


class ClosingTriton(FakeTriton):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self._journal = journal

    async def close(self) -> None:
        self._journal.note("triton closed")


class FakeRedis:
    """The little of redis.asyncio.Redis that start-up and shutdown use (the state and
    cache stores are overridden too)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._journal.note("redis closed")


class JournalStore(MemoryStore):
    def __init__(self, journal: Journal, fail_reads: bool = False) -> None:
        super().__init__()
        self._journal = journal
        self._fail_reads = fail_reads

    async def get(self, key: str) -> bytes | None:
        if self._fail_reads:  # not StateUnavailable: start-up does not shrug this off
            raise RuntimeError("the store broke during start-up")
        return await super().get(key)

    async def add_fields(self, key: str, increments: dict[str, int]) -> None:
        self._journal.note("counters flushed")
        await super().add_fields(key, increments)


def _settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo")),
        **overrides,
    )


def _journaled_flush(ledger: UsageLedger, journal: Journal) -> None:
    """Notes each write of the usage ledger (the container's last one included)."""
    flush = ledger.flush

    async def noted() -> int:
        journal.note("usage flushed")
        return await flush()

    ledger.flush = noted  # type: ignore[method-assign]


async def _usage_rows(url: str) -> list[tuple]:
    db = Database(url, DatabaseSettings(), Metrics())
    try:

        async def read(session) -> list[tuple]:
            rows = (await session.execute(select(UsageRow))).scalars()
            return [(r.subject, r.model, r.requests, r.items) for r in rows]

        return await db.run("read", read)
    finally:
        await db.close()


def _parts(settings: Settings, journal: Journal, store: MemoryStore) -> ServiceOverrides:
    return ServiceOverrides(
        triton=TritonClient(settings.triton, ClosingTriton(journal)),
        redis=FakeRedis(journal),  # type: ignore[arg-type]
        store=store,
    )


def test_shutdown_stops_the_loops_then_writes_the_counts_then_closes_in_reverse(tmp_path):
    # A database file that outlives the services, to see what their last write left;
    # the ledger's own loop waits a minute, so only the shutdown's write can happen here.
    url = f"sqlite+aiosqlite:///{tmp_path / 'infergate.db'}"
    settings = _settings(tmp_path, database=DatabaseSettings(url=url, usage_flush_s=60))
    journal = Journal()
    parts = _parts(settings, journal, JournalStore(journal))

    async def scenario() -> None:
        async with open_services(settings, Metrics(redis_configured=True), parts) as services:
            assert isinstance(services, Services)
            assert services.triton is parts.triton and services.store is parts.store
            assert services.redis is parts.redis and services.redis_guard is not None
            # The routing watch, the counters' writer, the usage ledger's writer, the
            # keys' last-used writer, the job reconciler, the in-process job
            # executor's one slot and the notification outbox's dispatcher.
            assert _running_others() == 7
            services.counters.add("k", {"n": 1})  # something left for the last flush
            services.ledger.add("key:k", "key:k", "intent", "1", items=2)  # and usage
            _journaled_flush(services.ledger, journal)
            assert journal.events == []
        assert _running_others() == 0
        # The usage counted before the stop signal is in the database (SIGTERM loses none).
        assert await _usage_rows(url) == [("key:k", "intent", 1, 2)]

    asyncio.run(scenario())
    # The loops are gone before the last counts and usage are written, the database is
    # closed after that, and Redis (opened after Triton) is closed before it.
    assert journal.events == [
        "counters flushed (0 running)",
        "usage flushed (0 running)",
        "redis closed (0 running)",
        "triton closed (0 running)",
    ]


def test_a_start_up_failing_half_way_closes_what_it_opened_and_starts_no_loop(tmp_path):
    settings = _settings(tmp_path)
    journal = Journal()
    # Triton and Redis are open by the time the routing is first read, which fails.
    parts = _parts(settings, journal, JournalStore(journal, fail_reads=True))

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="the store broke"):
            async with open_services(settings, Metrics(redis_configured=True), parts):
                pytest.fail("start-up should have failed")
        assert _running_others() == 0

    asyncio.run(scenario())
    # Nothing was counted, so nothing flushed; the rest closed in reverse order.
    assert journal.events == ["redis closed (0 running)", "triton closed (0 running)"]


def test_the_app_holds_one_container_built_from_its_overrides(tmp_path):
    settings = _settings(tmp_path)
    journal = Journal()
    store = MemoryStore()
    triton = TritonClient(settings.triton, ClosingTriton(journal))
    app = create_app(settings, ServiceOverrides(triton=triton, store=store))
    assert services_of(app) is None  # nothing is built before the lifespan starts
    with TestClient(app) as client:
        services = services_of(app)
        assert services is not None and services.started
        assert services.triton is triton and services.store is store
        assert services.access.store is store
        assert client.get("/health/startup").status_code == 200
        assert set(vars(app.state)["_state"]) == {"services"}  # the one thing it holds
    assert not services.started
    # (The test client's own tasks run around the lifespan: only the closing is checked.)
    assert [event.split(" (")[0] for event in journal.events] == ["triton closed"]


def _is_scope(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "scope") or (
        isinstance(node, ast.Attribute) and node.attr == "scope"
    )


# What Starlette hangs a `.state` on: the app, a request or websocket (a connection).
# SQL columns named `state` (jobs, chunks) are not state reads.
_STATE_OWNERS = {"app", "request", "req", "websocket", "connection", "conn"}


def _owner_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _state_reads_in(source: str, name: str = "<source>") -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        attribute = (
            isinstance(node, ast.Attribute)
            and node.attr == "state"
            and _owner_name(node.value) in _STATE_OWNERS
        )
        keyed = (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value == "state"
        )
        looked_up = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault")
            and _is_scope(node.func.value)
            and bool(node.args)
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "state"
        )
        if attribute or keyed or looked_up:
            found.append(f"{name}:{getattr(node, 'lineno', 0)}: {ast.unparse(node)}")
    return found


def _state_reads(path: Path) -> list[str]:
    """Every `app.state` / `request.state` (and of a websocket or connection, whatever
    holds it: `self.app.state` too) in a module, and every `scope["state"]`,
    `scope.get("state")` or `scope.setdefault("state", ...)`."""
    return _state_reads_in(path.read_text(), path.name)


def test_the_state_read_finder_finds_them_and_only_them():
    source = (
        "a = request.state.x\n"
        "b = self.app.state\n"
        "c = scope['state']\n"
        "d = scope.get('state')\n"
        "e = websocket.state\n"
        "f = JOBS.c.state\n"  # a SQL column
        "g = row.state\n"
    )
    found = sorted(line.split(": ", 1)[1] for line in _state_reads_in(source))
    assert found == sorted(
        [
            "request.state",
            "self.app.state",
            "scope['state']",
            "scope.get('state')",
            "websocket.state",
        ]
    )


def test_no_route_module_reads_app_state():
    modules = sorted((FRONTEND / "api").rglob("*.py"))
    assert len(modules) > 5
    assert [read for path in modules for read in _state_reads(path)] == []


def test_only_the_container_touches_app_state_and_nothing_uses_request_state():
    """The container hangs on app.state in one place; per-request facts go through the
    typed RequestContext (frontend/context.py), never request.state / scope["state"]."""
    reads = [
        read
        for path in sorted(FRONTEND.rglob("*.py"))
        if path != FRONTEND / "container.py"
        for read in _state_reads(path)
    ]
    assert reads == []
