"""The dispatcher contract (design §4.2) and the executor choice (§4.3): "off" accepts
work and runs nothing; the executors not built yet refuse to start, loudly."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import pytest

from frontend.jobs.dispatch import Dispatcher, NullDispatcher, WorkItem
from frontend.jobs.executors import executor_kind, open_executor
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


@pytest.mark.parametrize(
    ("executor", "broker", "kind"),
    [
        ("auto", None, "local"),
        ("local", None, "local"),
        ("auto", "redis://broker/1", "celery"),
        ("celery", "redis://broker/1", "celery"),
    ],
)
def test_executors_not_built_yet_refuse_to_start(executor, broker, kind):
    settings = Settings(jobs=JobSettings(executor=executor, broker_url=broker))
    with pytest.raises(RuntimeError, match=f"the {kind} job executor is not available yet"):
        open_executor(settings)
