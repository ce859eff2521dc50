"""The Celery dispatcher (design §4.4): tasks published in a thread under
jobs.dispatch_timeout_s; a broker that is down or hangs never fails a send (logged,
counted; the reconciler sends the work again); ping and depth from the broker's Redis,
None for AMQP. No broker: Celery's in-memory transport and a fake Redis client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from frontend.db.jobs import Work
from frontend.jobs import celery_dispatch
from frontend.jobs.celery_app import TASK_CHUNK, TASK_PLAN, make_celery
from frontend.jobs.celery_dispatch import CeleryDispatcher, queue_keys
from frontend.jobs.dispatch import Dispatcher
from frontend.jobs.executors import open_executor
from frontend.observability.metrics import Metrics
from frontend.settings import JobSettings, Settings

from .test_celery_config import QUEUE, drain, memory_app

CLOSED_REDIS = "redis://127.0.0.1:1/1"  # nothing listens on port 1


def jobs(**values: Any) -> JobSettings:
    return JobSettings(**{"broker_url": "redis://broker.invalid:6379/1", "queue": QUEUE, **values})


class FakePipeline:
    def __init__(self, lengths: dict[str, int]) -> None:
        self._lengths = lengths
        self.keys: list[str] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def llen(self, key: str) -> None:
        self.keys.append(key)

    async def execute(self) -> list[int]:
        return [self._lengths.get(key, 0) for key in self.keys]


class FakeRedis:
    """The two commands the dispatcher uses, with lists of given lengths."""

    def __init__(self, lengths: dict[str, int] | None = None, *, down: bool = False) -> None:
        self.lengths = lengths or {}
        self.down = down
        self.pipelines: list[FakePipeline] = []

    async def ping(self) -> bool:
        if self.down:
            raise ConnectionError("redis away")
        return True

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert transaction is False
        if self.down:
            raise ConnectionError("redis away")
        self.pipelines.append(FakePipeline(self.lengths))
        return self.pipelines[-1]


def test_it_is_a_dispatcher():
    dispatcher: Dispatcher = CeleryDispatcher(memory_app(), jobs())
    assert isinstance(dispatcher, CeleryDispatcher)
    with pytest.raises(ValueError, match=r"needs jobs\.broker_url"):
        CeleryDispatcher(memory_app(), JobSettings())


def test_send_publishes_one_task_per_item():
    app = memory_app()
    drain(app)
    dispatcher = CeleryDispatcher(app, jobs())

    async def run() -> None:
        await dispatcher.send([Work("plan", "job_a"), Work("chunk", "job_b", 2)])
        await dispatcher.send([])

    asyncio.run(run())
    assert drain(app) == [(TASK_PLAN, ["job_a"]), (TASK_CHUNK, ["job_b", 2])]
    assert dispatcher.failures == 0


def test_a_broker_that_refuses_fails_no_send(caplog):
    app = make_celery(Settings(jobs=jobs(broker_url=CLOSED_REDIS)))
    metrics = Metrics()
    dispatcher = CeleryDispatcher(app, jobs(broker_url=CLOSED_REDIS), metrics)
    items = [Work("chunk", "job_a", 0), Work("chunk", "job_a", 1)]
    asyncio.run(dispatcher.send(items))  # does not raise
    assert dispatcher.failures == 1 and dispatcher.failed_items == 2
    assert "the reconciler sends it again" in caplog.text
    counter = getattr(metrics, "job_dispatch_failures", None)
    if counter is not None:  # counted where Metrics has the counter
        assert counter._value.get() == 2


def test_a_broker_that_hangs_costs_the_dispatch_timeout_only(monkeypatch):
    release = threading.Event()
    started = threading.Event()

    def hanging_send(app: Any, work: Sequence[Any]) -> None:
        started.set()
        release.wait(10)  # a publish stuck on a dead connection

    monkeypatch.setattr(celery_dispatch, "send_work", hanging_send)
    dispatcher = CeleryDispatcher(memory_app(), jobs(dispatch_timeout_s=0.2))

    async def run() -> float:
        began = time.monotonic()
        await dispatcher.send([Work("plan", "job_a")])
        return time.monotonic() - began

    try:
        took = asyncio.run(run())
    finally:
        release.set()
    assert started.is_set()
    assert 0.2 <= took < 2.0, took
    assert dispatcher.failures == 1 and dispatcher.failed_items == 1


def test_the_event_loop_keeps_running_while_a_send_waits(monkeypatch):
    release = threading.Event()

    def slow_send(app: Any, work: Sequence[Any]) -> None:
        release.wait(5)

    monkeypatch.setattr(celery_dispatch, "send_work", slow_send)
    dispatcher = CeleryDispatcher(memory_app(), jobs(dispatch_timeout_s=5))

    async def run() -> int:
        send = asyncio.ensure_future(dispatcher.send([Work("plan", "job_a")]))
        ticks = 0
        deadline = time.monotonic() + 5
        while ticks < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the loop's own turns, while the thread publishes
            ticks += 1
        release.set()
        await send
        return ticks

    assert asyncio.run(run()) == 5
    assert dispatcher.failures == 0


def test_depth_is_the_length_of_the_queues_lists_on_redis():
    keys = queue_keys(QUEUE)
    assert keys[0] == QUEUE and all(key.startswith(QUEUE + "\x06\x16") for key in keys[1:])
    redis = FakeRedis({QUEUE: 7, keys[2]: 2, "other.queue": 100})
    dispatcher = CeleryDispatcher(memory_app(), jobs(), redis=redis)  # type: ignore[arg-type]
    assert asyncio.run(dispatcher.depth()) == 9
    assert redis.pipelines[0].keys == keys


def test_ping_answers_while_redis_is_up_and_raises_when_down():
    up = CeleryDispatcher(memory_app(), jobs(), redis=FakeRedis())  # type: ignore[arg-type]
    asyncio.run(up.ping())
    down = CeleryDispatcher(memory_app(), jobs(), redis=FakeRedis(down=True))  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        asyncio.run(down.ping())
    with pytest.raises(ConnectionError):
        asyncio.run(down.depth())  # the reconciler keeps the gauge's last value


def test_amqp_has_no_depth_and_its_ping_fails_fast_when_down():
    settings = jobs(broker_url="amqp://guest:guest@127.0.0.1:1//", dispatch_timeout_s=3)
    dispatcher = CeleryDispatcher(make_celery(Settings(jobs=settings)), settings)

    async def run() -> None:
        await dispatcher.start()
        assert not dispatcher.is_redis
        assert await dispatcher.depth() is None
        began = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 (kombu's or a timeout, either is "down")
            await dispatcher.ping()
        assert time.monotonic() - began < 3.5
        await dispatcher.close()

    asyncio.run(run())


def test_start_makes_a_redis_client_without_connecting_and_close_closes_it():
    dispatcher = CeleryDispatcher(memory_app(), jobs(broker_url=CLOSED_REDIS))

    async def run() -> None:
        await dispatcher.start()  # nothing listens: a connection would fail here
        client = dispatcher._redis
        assert client is not None
        with pytest.raises(Exception):  # noqa: B017 (redis' ConnectionError)
            await dispatcher.ping()
        await dispatcher.close()
        assert dispatcher._redis is None

    asyncio.run(run())


@pytest.mark.parametrize(
    ("executor", "broker", "redis"),
    [
        ("auto", "redis://broker.invalid:6379/1", True),
        ("celery", "amqp://broker.invalid//", False),
    ],
)
def test_open_executor_opens_the_celery_dispatcher(executor, broker, redis):
    settings = Settings(jobs=JobSettings(executor=executor, broker_url=broker, queue=QUEUE))
    dispatcher = open_executor(settings, metrics=Metrics())
    assert isinstance(dispatcher, CeleryDispatcher)
    assert dispatcher.is_redis is redis
    app = dispatcher._app
    assert app.conf.task_default_queue == QUEUE and app.conf.broker_url == broker
