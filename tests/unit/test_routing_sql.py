"""The router over its system of record (an in-memory SQLite database, no servers): each
change stored with its history row and audit entry in one transaction, announced through
the state store to the other workers, and reloaded from SQL every few seconds anyway so a
lost announcement only delays it; stored routings that no longer validate are logged once
and never stop the others from applying."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from frontend.catalog import Catalog
from frontend.db import audit as audit_module
from frontend.db import routing as stored_routing
from frontend.db.database import MEMORY_URL, Database
from frontend.db.migrate import create_all
from frontend.db.tables import AuditRow, RoutingHistoryRow, RoutingRow
from frontend.errors import DatabaseUnavailable, StateUnavailable
from frontend.observability.metrics import Metrics
from frontend.routing import router as router_module
from frontend.routing.assign import Assigner
from frontend.routing.config import ModelRouting, RoutingConfig
from frontend.routing.router import CHANGED, Router
from frontend.settings import DatabaseSettings
from frontend.state.memory import MemoryStore

from .cards import write_cards
from .clock import FakeClock

RELOAD_S = 5.0


class Workers:
    """Routers as two workers would hold them: one catalog, one database, one store."""

    def __init__(self, tmp_path: Path, store: MemoryStore | None = None) -> None:
        self.catalog = Catalog.load(write_cards(tmp_path / "repo"))
        self.db = Database(MEMORY_URL, DatabaseSettings(), Metrics())
        self.store = store or MemoryStore()
        self.clock = FakeClock(100.0)

    def router(self, defaults: RoutingConfig | None = None) -> Router:
        return Router(
            self.catalog,
            defaults or RoutingConfig(),
            self.store,
            Assigner(b"k" * 32),
            database=self.db,
            reload_s=RELOAD_S,
            clock=self.clock,
        )

    async def rows(self, table: Any) -> list[Any]:
        async def read(session):
            return list((await session.execute(select(table))).scalars().all())

        return await self.db.run("test", read)

    async def put_row(self, model: str, config: Any) -> None:
        """A stored routing written behind the API's back (as an older release might have
        left it, or as it reads once a version is removed from the repository)."""

        async def write(session):
            await session.merge(
                RoutingRow(model=model, config=config, updated_at=time.time(), updated_by="t")
            )

        await self.db.run("test", write)


def run(tmp_path: Path, test: Callable[[Workers], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        workers = Workers(tmp_path, **kwargs)
        await create_all(workers.db.engine)
        try:
            await test(workers)
        finally:
            await workers.db.close()

    asyncio.run(main())


ROLLOUT = ModelRouting(default="1", rollout={"version": "2", "percent": 10})


def test_each_change_is_stored_with_its_history_and_audit_entry(tmp_path):
    async def test(w: Workers) -> None:
        router = w.router()
        await router.sync()
        assert router.table["intent"].default == "2"  # the file's defaults: highest stable
        applied = await router.set_model("intent", ROLLOUT, actor="key:a1", request_id="req-1")
        assert applied.rollout is not None and applied.rollout.percent == 10
        assert router.table["intent"] == applied  # at once on the worker that wrote it
        await router.set_model(
            "intent", ModelRouting(default="2"), actor="user:u2", request_id="req-2"
        )
        (row,) = await w.rows(RoutingRow)
        assert (row.model, row.config["default"], row.updated_by) == ("intent", "2", "user:u2")
        reset = await router.set_model("intent", None, actor="bootstrap", request_id=None)
        assert reset.default == "2" and reset.rollout is None
        assert await w.rows(RoutingRow) == []  # absent: the file's defaults

        newest_first = await router.history("intent", limit=10)
        assert [(h.actor, h.request_id) for h in newest_first] == [
            ("bootstrap", None),
            ("user:u2", "req-2"),
            ("key:a1", "req-1"),
        ]
        third, second, first = newest_first
        assert first.previous is None  # the defaults before the first change
        assert first.current == ROLLOUT.model_dump(mode="json")
        assert second.previous == first.current and second.current["default"] == "2"
        assert third.previous == second.current and third.current is None
        assert first.id < second.id < third.id and first.changed_at <= third.changed_at
        assert [h.id for h in await router.history("intent", limit=2, before=third.id)] == [
            second.id,
            first.id,
        ]
        assert await router.history("embed", limit=10) == []

        entries = sorted(await w.rows(AuditRow), key=lambda a: a.id)
        assert [(a.action, a.target, a.actor, a.request_id) for a in entries] == [
            ("routing.update", "model:intent", "key:a1", "req-1"),
            ("routing.update", "model:intent", "user:u2", "req-2"),
            ("routing.reset", "model:intent", "bootstrap", None),
        ]
        assert [a.details["history_id"] for a in entries] == [first.id, second.id, third.id]

    run(tmp_path, test)


def test_a_failing_audit_insert_leaves_no_routing_and_no_history(tmp_path, monkeypatch):
    def broken_add(session, **fields) -> None:
        session.add(AuditRow(at=time.time(), actor=None, action="x", target="t", details={}))

    async def test(w: Workers) -> None:
        router = w.router()
        await router.sync()
        before = router.table["intent"]
        monkeypatch.setattr(audit_module, "add", broken_add)  # NOT NULL: the insert fails
        with pytest.raises(IntegrityError):
            await router.set_model("intent", ROLLOUT, actor="key:a1", request_id="r")
        assert await w.rows(RoutingRow) == []
        assert await w.rows(RoutingHistoryRow) == []
        assert await w.rows(AuditRow) == []
        assert router.table["intent"] is before
        assert await w.store.get(CHANGED) is None  # nothing announced either

    run(tmp_path, test)


def test_another_worker_applies_an_announced_change_at_its_next_poll(tmp_path):
    async def test(w: Workers) -> None:
        first, second = w.router(), w.router()
        assert await first.sync() is False and await second.sync() is False  # defaults
        await first.set_model("intent", ROLLOUT, actor="key:a1", request_id="r")
        assert second.table["intent"].rollout is None  # not yet polled
        assert await second.sync() is True  # the announcement: reloaded from SQL
        assert second.table["intent"] == first.table["intent"]
        assert await second.sync() is False  # nothing new
        await second.set_model("intent", None, actor="key:a1", request_id="r2")
        assert await first.sync() is True and first.table["intent"].rollout is None

    run(tmp_path, test)


def test_without_an_announcement_sql_is_read_only_at_the_periodic_reload(tmp_path):
    async def test(w: Workers) -> None:
        router = w.router()
        await router.sync()
        await w.put_row("intent", {"default": "1"})  # stored, never announced
        assert await router.sync() is False  # one GET per poll, no SQL read
        w.clock.now += RELOAD_S - 0.1
        assert await router.sync() is False
        w.clock.now += 0.1
        assert await router.sync() is True and router.table["intent"].default == "1"

    run(tmp_path, test)


def test_a_flushed_announcement_still_converges_by_the_periodic_reload(tmp_path):
    async def test(w: Workers) -> None:
        writer, reader = w.router(), w.router()
        await writer.sync()
        await reader.sync()
        await writer.set_model("intent", ROLLOUT, actor="key:a1", request_id="r")
        w.store._values.clear()  # FLUSHALL before the reader polled
        assert await reader.sync() is False  # it saw no announcement
        w.clock.now += RELOAD_S
        assert await reader.sync() is True
        assert reader.table["intent"] == writer.table["intent"]

    run(tmp_path, test)


class DownStore(MemoryStore):
    """The state store unreachable (Redis down)."""

    async def get(self, key: str) -> bytes | None:
        raise StateUnavailable("shared state is unreachable")

    async def put(self, key, value, ttl_s=None, only_if_absent=False) -> bool:
        raise StateUnavailable("shared state is unreachable")


def test_with_the_state_store_down_changes_are_stored_and_reloaded(tmp_path):
    async def test(w: Workers) -> None:
        writer, reader = w.router(), w.router()
        assert await writer.sync() is False  # does not raise: the store is not needed
        await reader.sync()
        applied = await writer.set_model("intent", ROLLOUT, actor="key:a1", request_id="r")
        assert writer.table["intent"] == applied  # stored in SQL, not announced
        assert len(await w.rows(RoutingRow)) == 1
        assert await reader.sync() is False
        w.clock.now += RELOAD_S
        assert await reader.sync() is True and reader.table["intent"] == applied

    run(tmp_path, test, store=DownStore())


def test_a_routing_a_new_worker_cannot_use_keeps_the_defaults_and_is_logged_once(tmp_path, caplog):
    async def test(w: Workers) -> None:
        await w.put_row("intent", {"rollout": {"version": "7", "percent": 5}})  # not served
        router = w.router()
        with caplog.at_level(logging.WARNING, "infergate.routing"):
            assert await router.sync() is False
            assert router.table["intent"].default == "2"  # a start never fails over it
            for _ in range(3):
                w.clock.now += RELOAD_S
                await router.sync()
            # Another model's change still applies while that row stays bad.
            await w.put_row("embed", {"default": "1", "versions": {"1": {"status": "canary"}}})
            w.clock.now += RELOAD_S
            assert await router.sync() is True
            assert router.table["embed"].status("1").status == "canary"
        warned = [r for r in caplog.records if r.message == "stored routing not applied"]
        assert len(warned) == 1 and warned[0].model == "intent"
        assert "7" in warned[0].error
        # The next good routing of that model applies.
        await w.put_row("intent", {"default": "1"})
        w.clock.now += RELOAD_S
        assert await router.sync() is True and router.table["intent"].default == "1"

    run(tmp_path, test)


def test_a_routing_that_stops_validating_leaves_the_last_good_one_serving(tmp_path):
    async def test(w: Workers) -> None:
        router = w.router()
        await router.set_model("intent", ROLLOUT, actor="key:a1", request_id="r")
        good = router.table["intent"]
        await w.put_row("intent", {"default": "9"})
        w.clock.now += RELOAD_S
        assert await router.sync() is False
        assert router.table["intent"] is good  # not the defaults: the last good routing

    run(tmp_path, test)


def test_a_refused_routing_stores_nothing(tmp_path):
    async def test(w: Workers) -> None:
        router = w.router()
        with pytest.raises(ValueError, match="not servable"):
            await router.set_model(
                "intent",
                ModelRouting(rollout={"version": "7", "percent": 5}),
                actor="key:a1",
                request_id="r",
            )
        assert await w.rows(RoutingRow) == [] and await w.rows(AuditRow) == []
        assert await w.store.get(CHANGED) is None

    run(tmp_path, test)


def test_the_file_defaults_apply_where_no_admin_routing_is_stored(tmp_path):
    defaults = RoutingConfig(models={"intent": ModelRouting(default="1")})

    async def test(w: Workers) -> None:
        router = w.router(defaults)
        await router.set_model("intent", ModelRouting(default="2"), actor="a", request_id=None)
        assert router.table["intent"].default == "2"
        await router.set_model("intent", None, actor="a", request_id=None)
        assert router.table["intent"].default == "1"  # the file's, not "highest"
        (reset,) = await router.history("intent", limit=1)
        assert reset.current is None

    run(tmp_path, test)


def test_the_watch_loop_survives_outages_and_unexpected_errors(tmp_path, monkeypatch, caplog):
    failures: list[BaseException] = [
        DatabaseUnavailable("down"),
        StateUnavailable("down"),
        RuntimeError("boom"),
        RuntimeError("boom again"),
    ]
    polls: list[float] = []

    class Enough(Exception):
        pass

    async def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 5:  # four failing polls, then one that works
            raise Enough

    async def test(w: Workers) -> None:
        router = w.router()
        real_sync = router.sync

        async def flaky_sync() -> bool:
            if failures:
                raise failures.pop(0)
            return await real_sync()

        router.sync = flaky_sync  # type: ignore[method-assign]
        await w.put_row("intent", {"default": "1"})
        monkeypatch.setattr(router_module, "asyncio", SimpleNamespace(sleep=sleep))
        with caplog.at_level(logging.ERROR, "infergate.routing"), pytest.raises(Enough):
            await router.watch()
        assert router.table["intent"].default == "1"  # the fifth poll worked
        errors = [r for r in caplog.records if r.message == "routing reload failed"]
        assert len(errors) == 1 and errors[0].error == "RuntimeError"  # once, not per poll

    run(tmp_path, test)
    assert polls == [0.5] * 5


def test_a_first_routing_stored_at_the_same_moment_by_another_admin_is_retried(
    tmp_path, monkeypatch
):
    """Two admins each routing a model that had no row: on PostgreSQL both read none, the
    second insert fails on the primary key, and that change is made once more (then
    recording the first one's routing as the routing it replaced). Simulated here: the
    first attempt fails as the second admin's would."""
    real_save = stored_routing.save
    attempts: list[str] = []

    async def save(session, model, config, **kwargs):
        attempts.append(model)
        if len(attempts) == 1:
            raise IntegrityError("INSERT INTO routing", {}, Exception("duplicate key"))
        return await real_save(session, model, config, **kwargs)

    async def test(w: Workers) -> None:
        router = w.router()
        monkeypatch.setattr(stored_routing, "save", save)
        applied = await router.set_model(
            "intent", ModelRouting(default="1"), actor="a", request_id=None
        )
        assert applied.default == "1" and attempts == ["intent", "intent"]
        assert len(await w.rows(RoutingHistoryRow)) == 1 and len(await w.rows(AuditRow)) == 1

        async def count(session):
            return (await session.execute(select(func.count()).select_from(RoutingRow))).scalar()

        assert await w.db.run("test", count) == 1

    run(tmp_path, test)
