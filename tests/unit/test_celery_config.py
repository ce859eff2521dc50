"""The Celery app of batch jobs (design §4.4): its configuration from Settings, its two
tasks (the runner's coroutine on the pool process's own loop, follow-ups sent), the pool
process's services opened after the fork and closed at its end, and the worker's command
line. No broker: Celery's in-memory transport, and fakes of the worker's services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy import text

from frontend.db.jobs import Work
from frontend.jobs import celery_app
from frontend.jobs.celery_app import TASK_CHUNK, TASK_PLAN, make_celery, send_work, task_of
from frontend.settings import JobSettings, Settings
from frontend.worker import worker_argv

QUEUE = "infergate.test"


def settings(**jobs: Any) -> Settings:
    values: dict[str, Any] = {"broker_url": "redis://broker.invalid:6379/1", "queue": QUEUE}
    return Settings(jobs=JobSettings(**{**values, **jobs}))


def memory_app(**jobs: Any) -> celery_app.JobsCelery:
    """The app as made from settings, on Celery's in-process transport instead."""
    app = make_celery(settings(**jobs))
    app.conf.broker_url = "memory://"
    return app


def drain(app: Celery, queue: str = QUEUE) -> list[tuple[str, list[Any]]]:
    """The (task, args) of every message waiting in `queue`, in order; each acked."""
    found: list[tuple[str, list[Any]]] = []
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue)
        try:
            while True:
                try:
                    message = simple.get(timeout=0.05)
                except simple.Empty:
                    return found
                assert message.content_type == "application/json"
                args, kwargs, _ = message.payload
                assert kwargs == {}
                found.append((message.headers["task"], args))
                message.ack()
        finally:
            simple.close()


# -- configuration ----------------------------------------------------------------------


def test_the_configuration_is_the_designs():
    app = make_celery(
        settings(chunk_timeout_s=120, visibility_timeout_s=400, broker_url="redis://b:6379/1")
    )
    conf = app.conf
    assert conf.broker_url == "redis://b:6379/1"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.task_acks_on_failure_or_timeout is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 400
    assert options["visibility_timeout"] > 120 + 60  # above the longest chunk and backstop
    assert options["socket_timeout"] == 5 and options["socket_connect_timeout"] == 2
    # SQL holds the results: no backend and nothing stored.
    assert conf.result_backend is None
    assert conf.task_ignore_result is True
    assert conf.task_default_queue == QUEUE
    assert conf.task_time_limit == 120 + 60
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.worker_hijack_root_logger is False
    assert conf.worker_send_task_events is False
    assert conf.broker_connection_retry_on_startup is True
    # A pool child opening its services is not killed for being slow to report "up".
    assert conf.worker_proc_alive_timeout >= 30


def test_the_visibility_timeout_must_be_above_the_longest_chunk():
    with pytest.raises(ValueError, match="visibility_timeout_s must be above"):
        JobSettings(chunk_timeout_s=300, visibility_timeout_s=360)


def test_making_the_app_connects_to_nothing_and_sets_no_current_app():
    from celery import current_app

    before = current_app._get_current_object()
    app = make_celery(settings(broker_url="redis://127.0.0.1:1/1"))  # nothing listens there
    assert app._pool is None  # no broker connection pool yet
    assert current_app._get_current_object() is before


def test_the_two_tasks_are_registered_by_name_and_acked_late():
    app = make_celery(settings())
    for name in (TASK_PLAN, TASK_CHUNK):
        task = app.tasks[name]
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.ignore_result is True
    assert (TASK_PLAN, TASK_CHUNK) == ("infergate.jobs.plan", "infergate.jobs.chunk")


def test_work_items_become_tasks_and_nothing_else():
    assert task_of(Work("plan", "job_a")) == (TASK_PLAN, ["job_a"])
    assert task_of(Work("chunk", "job_a", 7)) == (TASK_CHUNK, ["job_a", 7])
    with pytest.raises(ValueError, match="unknown work item"):
        task_of(Work("chunk", "job_a", None))


def test_send_work_publishes_json_tasks_on_the_jobs_queue():
    app = memory_app()
    drain(app)
    send_work(app, [Work("plan", "job_a"), Work("chunk", "job_a", 3)])
    send_work(app, [])
    assert drain(app) == [(TASK_PLAN, ["job_a"]), (TASK_CHUNK, ["job_a", 3])]


def test_the_default_app_is_made_on_first_use_only(monkeypatch):
    monkeypatch.setattr(celery_app, "_default_app", None)
    monkeypatch.setenv("INFERGATE_JOBS__QUEUE", "from.environment")
    app = celery_app.app
    assert isinstance(app, celery_app.JobsCelery)
    assert app.conf.task_default_queue == "from.environment"
    assert celery_app.celery is app
    with pytest.raises(AttributeError):
        celery_app.nothing_here  # noqa: B018


# -- the tasks, on a pool process's loop ------------------------------------------------


@dataclass
class FakeRunner:
    follow: list[Work] = field(default_factory=list)
    calls: list[tuple[str, Any, asyncio.AbstractEventLoop]] = field(default_factory=list)
    error: Exception | None = None

    async def plan(self, job_id: str) -> list[Work]:
        self.calls.append(("plan", job_id, asyncio.get_running_loop()))
        if self.error is not None:
            raise self.error
        return self.follow

    async def run_chunk(self, job_id: str, idx: int) -> list[Work]:
        self.calls.append(("chunk", (job_id, idx), asyncio.get_running_loop()))
        return self.follow


@dataclass
class FakeServices:
    runner: FakeRunner
    synced: int = 0
    closed: int = 0

    async def sync_routing(self) -> None:
        self.synced += 1

    async def aclose(self) -> None:
        self.closed += 1


@pytest.fixture
def pool_process(monkeypatch) -> Iterator[list[FakeServices]]:
    """This test's process as a pool child: its services are fakes; each opened one is
    listed. The process state is closed again after the test."""
    opened: list[FakeServices] = []

    async def open_services(_: Settings) -> FakeServices:
        opened.append(FakeServices(FakeRunner()))
        return opened[-1]

    monkeypatch.setattr(celery_app, "open_services", open_services)
    celery_app.close_process()
    yield opened
    celery_app.close_process()


def test_a_chunk_runs_on_the_process_loop_and_sends_its_follow_ups(pool_process):
    app = memory_app()
    drain(app)
    app.tasks[TASK_PLAN]("job_a")  # opens the services (as worker_process_init would)
    services = pool_process[0]
    services.runner.follow = [Work("chunk", "job_a", 4), Work("chunk", "job_a", 5)]
    app.tasks[TASK_CHUNK]("job_a", 3)
    state = celery_app.process_state()
    assert state is not None and not state.loop.is_running() and not state.loop.is_closed()
    assert [(kind, arg) for kind, arg, _ in services.runner.calls] == [
        ("plan", "job_a"),
        ("chunk", ("job_a", 3)),
    ]
    # One loop for the process, reused by every task (its connections live on it).
    assert {loop for _, _, loop in services.runner.calls} == {state.loop}
    assert services.synced == 1  # the routing table, before a chunk
    assert drain(app) == [(TASK_CHUNK, ["job_a", 4]), (TASK_CHUNK, ["job_a", 5])]
    assert len(pool_process) == 1  # opened once


def test_a_runner_error_is_logged_not_raised_and_sends_nothing(pool_process, caplog):
    app = memory_app()
    drain(app)
    app.tasks[TASK_CHUNK]("job_a", 0)  # opens the services
    pool_process[0].runner.follow = [Work("chunk", "job_a", 1)]
    app.tasks[TASK_CHUNK]("job_a", 0)
    pool_process[0].runner.error = RuntimeError("boom")
    app.tasks[TASK_PLAN]("job_b")  # returns: the message is acked, SQL still has the work
    assert "job task failed in the runner" in caplog.text
    assert drain(app) == [(TASK_CHUNK, ["job_a", 1])]  # only the first task's follow-up


def test_follow_ups_a_broker_refuses_are_left_to_the_reconciler(pool_process, caplog):
    app = make_celery(settings(broker_url="redis://127.0.0.1:1/1"))  # nothing listens
    app.tasks[TASK_PLAN]("job_a")
    pool_process[0].runner.follow = [Work("chunk", "job_a", 0)]
    app.tasks[TASK_PLAN]("job_a")  # does not raise
    assert "the reconciler sends it again" in caplog.text


def test_services_that_failed_to_open_are_tried_again_at_the_next_task(monkeypatch, caplog):
    attempts: list[int] = []

    async def open_services(_: Settings) -> FakeServices:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database away")
        return FakeServices(FakeRunner())

    monkeypatch.setattr(celery_app, "open_services", open_services)
    celery_app.close_process()
    try:
        app = memory_app()
        app.tasks[TASK_PLAN]("job_a")  # skipped, logged
        assert "opening its services failed" in caplog.text
        state = celery_app.process_state()
        assert state is not None and state.services is None
        app.tasks[TASK_PLAN]("job_a")
        assert state.services is not None
        runner: Any = state.services.runner
        assert [kind for kind, *_ in runner.calls] == ["plan"]
        assert len(attempts) == 2
    finally:
        celery_app.close_process()


def test_the_process_signals_open_and_close_the_services_of_our_app_only(pool_process):
    ours = memory_app()
    other = Celery("someone-else", set_as_current=False)
    with _current(other):
        worker_process_init.send(sender="host")
    assert pool_process == [] and celery_app.process_state() is None
    with _current(ours):
        worker_process_init.send(sender="host")
    state = celery_app.process_state()
    assert state is not None and len(pool_process) == 1
    worker_process_shutdown.send(sender="host", pid=None, exitcode=0)
    assert pool_process[0].closed == 1
    assert state.loop.is_closed()
    assert celery_app.process_state() is None


@contextlib.contextmanager
def _current(app: Celery) -> Iterator[None]:
    from celery import current_app

    before = current_app._get_current_object()
    app.set_current()
    try:
        yield
    finally:
        before.set_current()


# -- the worker's command line ----------------------------------------------------------


def test_the_worker_runs_a_prefork_pool_on_the_jobs_queue_only():
    argv = worker_argv(3, QUEUE, "jobs1@host", "info")
    assert argv[0] == "worker"
    assert "--pool=prefork" in argv and "--concurrency=3" in argv
    assert argv[argv.index("-Q") + 1] == QUEUE
    assert argv[argv.index("-n") + 1] == "jobs1@host"
    for flag in ("--without-gossip", "--without-mingle", "--without-heartbeat"):
        assert flag in argv
    assert "--loglevel=INFO" in argv


def test_the_cli_has_the_worker_command(monkeypatch):
    from frontend import __main__ as cli
    from frontend import worker

    seen: dict[str, Any] = {}
    monkeypatch.setattr(worker, "run", lambda args: seen.setdefault("args", args) and 0)
    parser_args = ["worker", "--concurrency", "2", "--metrics-port", "0"]
    # add_parser bound `run` at parse time: patch before main builds the parser.
    cli.main(parser_args)
    args = seen["args"]
    assert args.concurrency == 2 and args.metrics_port == 0 and args.loglevel == "info"


# -- a pool process's services ----------------------------------------------------------


REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def copied_cards(to: Path) -> Path:
    """The built repository's cards (all the catalog reads), without the model files."""
    cards = list(REPOSITORY.glob("*/*/card.json"))
    if not cards:
        pytest.fail("model_repository is not built; run `make models` (make test does)")
    for card in cards:
        where = to / card.relative_to(REPOSITORY)
        where.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(card, where)
    return to


def worker_settings(tmp_path: Path, **values: Any) -> Settings:
    from frontend.settings import DatabaseSettings, TritonSettings

    return Settings(
        environment="test",
        triton=TritonSettings(model_repository=copied_cards(tmp_path / "repository")),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"),
        jobs=JobSettings(
            broker_url="redis://broker.invalid:6379/1", storage_dir=tmp_path / "jobs", fsync=False
        ),
        **values,
    )


def test_a_worker_needs_a_broker_and_the_frontends_database(tmp_path):
    from frontend.jobs.worker_services import WorkerSetupError, check_worker_settings

    with pytest.raises(WorkerSetupError, match="INFERGATE_JOBS__BROKER_URL"):
        check_worker_settings(Settings(environment="test"))
    in_memory = Settings(environment="test", jobs=JobSettings(broker_url="redis://b:6379/1"))
    with pytest.raises(WorkerSetupError, match="INFERGATE_DATABASE__URL"):
        check_worker_settings(in_memory)
    check_worker_settings(worker_settings(tmp_path))  # a file both can open: fine


def test_worker_services_open_the_batch_client_and_close_everything(tmp_path, monkeypatch):
    from frontend.db.database import Database
    from frontend.jobs.worker_services import open_worker_services
    from frontend.triton.client import TritonClient

    closed: list[str] = []
    for cls in (TritonClient, Database):
        original = cls.close

        async def close(self: Any, original: Any = original, name: str = cls.__name__) -> None:
            closed.append(name)
            await original(self)

        monkeypatch.setattr(cls, "close", close)
    settings = worker_settings(tmp_path)

    async def run() -> None:
        services = await open_worker_services(settings)
        try:
            assert services.triton.priority == settings.jobs.triton_priority == 2
            assert services.inference.shadow is False
            ctx = services.context
            assert ctx.worker_id.endswith(f":{os.getpid()}")
            assert ctx.storage.root == tmp_path / "jobs"  # type: ignore[attr-defined]
            assert set(ctx.adapters) >= {"text-classification", "feature-extraction"}
            assert services.runner.ctx is ctx
            assert ctx.database.url.endswith("jobs.db")
            # Migrated: a job the database does not hold plans to nothing, without error.
            assert await services.runner.plan("job_missing") == []
            assert await ctx.database.run("probe", _count_jobs) == 0
        finally:
            await services.aclose()

    asyncio.run(run())
    assert closed == ["Database", "TritonClient"]  # in reverse order of opening


async def _count_jobs(session: Any) -> int:
    return int((await session.execute(text("select count(*) from jobs"))).scalar_one())


def test_the_routing_table_is_read_again_at_most_every_poll(tmp_path):
    from frontend.jobs.worker_services import WorkerServices

    clock = [100.0]
    synced: list[float] = []

    class Router:
        async def sync(self) -> bool:
            synced.append(clock[0])
            return False

    services = WorkerServices(
        context=None,  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]
        triton=None,  # type: ignore[arg-type]
        inference=None,  # type: ignore[arg-type]
        router=Router(),  # type: ignore[arg-type]
        stack=contextlib.AsyncExitStack(),
        routing_poll_s=0.5,
        clock=lambda: clock[0],
    )

    async def run() -> None:
        for now in (100.0, 100.2, 100.6, 100.7, 101.2):
            clock[0] = now
            await services.sync_routing()

    asyncio.run(run())
    assert synced == [100.0, 100.6, 101.2]
