"""The dispatcher contract (design §4.2) and the executor choice (§4.3): "off" accepts
work and runs nothing; "local" runs it in process when given a runner; Celery (not built
yet) and "local" without a runner refuse to start, loudly."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import pytest

from frontend.jobs.dispatch import Dispatcher, NullDispatcher, WorkItem
from frontend.jobs.executors import executor_kind, open_executor
from frontend.jobs.local import LocalExecutor
from frontend.settings import JobSettings, Settings


@dataclass(frozen=True, slots=True)
class Work:
    """The shape frontend/db/jobs.py's Work has (the design's §4.1)."""

    kind: Literal["plan", "chunk"]
    job_id: str
    idx: int | None = None


def test_null_dispatcher_takes_work_and_runs_nothing():
    async def run() -> None:
        dispatcher: Dispatcher = NullDispatcher()
        await dispatcher.start()
        items: list[WorkItem] = [Work("plan", "job_a"), Work("chunk", "job_a", 3)]
        await dispatcher.send(items)
        await dispatcher.send([])
        await dispatcher.ping()  # always "up": readiness has no broker component then
        assert await dispatcher.depth() is None
        await dispatcher.close()
        assert isinstance(dispatcher, NullDispatcher) and dispatcher.discarded == 2

    asyncio.run(run())


def test_off_opens_the_null_dispatcher():
    settings = Settings(jobs=JobSettings(executor="off"))
    assert isinstance(open_executor(settings), NullDispatcher)
    with_broker = JobSettings(executor="off", broker_url="redis://broker/1")
    assert isinstance(open_executor(Settings(jobs=with_broker)), NullDispatcher)


@pytest.mark.parametrize(
    ("executor", "broker", "kind"),
    [
        ("auto", None, "local"),
        ("auto", "redis://broker:6379/1", "celery"),
        ("local", "redis://broker:6379/1", "local"),
        ("celery", "amqp://broker//", "celery"),
        ("off", None, "off"),
    ],
)
def test_auto_means_celery_with_a_broker_else_local(executor, broker, kind):
    assert executor_kind(JobSettings(executor=executor, broker_url=broker)) == kind


class Runner:
    """A job runner that is never called (the executor is not started)."""

    async def plan(self, job_id: str) -> list:
        raise AssertionError("not started")

    async def run_chunk(self, job_id: str, idx: int) -> list:
        raise AssertionError("not started")


@pytest.mark.parametrize(("executor", "broker"), [("auto", None), ("local", "redis://b/1")])
def test_local_with_a_runner_opens_the_in_process_executor(executor, broker):
    jobs = JobSettings(executor=executor, broker_url=broker, local_slots=3)
    dispatcher = open_executor(Settings(jobs=jobs), Runner())
    assert isinstance(dispatcher, LocalExecutor)
    assert asyncio.run(dispatcher.depth()) == 0


@pytest.mark.parametrize("executor", ["auto", "local"])
def test_executors_that_cannot_run_refuse_to_start(executor):
    """The in-process executor without a job runner to drive; the Celery executor opens
    (tests/unit/test_celery_dispatch.py)."""
    settings = Settings(jobs=JobSettings(executor=executor))
    with pytest.raises(
        RuntimeError, match="the local job executor is not available without a job runner"
    ):
        open_executor(settings)
