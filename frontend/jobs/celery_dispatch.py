"""The Celery dispatcher (design §4.4): work handed to the broker as tasks.

A send is a hint (design §0): the broker being down or slow must never fail a
submission or stall the event loop. So publishing runs in a thread under
`jobs.dispatch_timeout_s`, and a failure is logged and counted; the items stay in SQL,
and the reconciler sends them again once they are stale (`jobs.redispatch_s`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from ..job_settings import JobSettings
from ..observability.metrics import Metrics
from .celery_app import send_work
from .dispatch import Dispatcher, WorkItem

if TYPE_CHECKING:
    from celery import Celery
    from redis.asyncio import Redis

log = logging.getLogger("infergate.jobs")

REDIS_SCHEMES = ("redis://", "rediss://")
# ping() of an AMQP broker: one connection attempt this long at most.
AMQP_PING_S = 1.0
# kombu's Redis transport keeps a task of priority p > 0 in "<queue>\x06\x16<p>" (its
# default priority steps); our tasks carry none, but a queue's depth counts them all.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s messages (kombu's layout)."""
    return [
        queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}"
        for step in KOMBU_PRIORITY_STEPS
    ]


class CeleryDispatcher(Dispatcher):
    def __init__(
        self,
        app: Celery,
        settings: JobSettings,
        metrics: Metrics | None = None,
        *,
        redis: Redis | None = None,
    ) -> None:
        """`redis`: a client of the broker's Redis for ping and depth (default: made
        from jobs.broker_url at start when it is a Redis URL; None for AMQP)."""
        if settings.broker_url is None:
            raise ValueError("the Celery dispatcher needs jobs.broker_url")
        self._app = app
        self._settings = settings
        self._metrics = metrics
        self._url = settings.broker_url.get_secret_value()
        self._redis = redis
        self._own_redis = False
        # For tests and logs: items that could not be sent, and sends that failed.
        self.failed_items = 0
        self.failures = 0

    @property
    def is_redis(self) -> bool:
        return self._url.startswith(REDIS_SCHEMES)

    async def start(self) -> None:
        if self._redis is None and self.is_redis:
            import redis.asyncio as redis

            # No connection yet: the client connects on its first command.
            self._redis = redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
            self._own_redis = True

    async def close(self) -> None:
        if self._redis is not None and self._own_redis:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        # The producer pool's connections, in a thread: closing a socket to a broker
        # that went away may block until its timeout.
        with anyio.move_on_after(self._settings.dispatch_timeout_s):
            await anyio.to_thread.run_sync(self._close_pools, abandon_on_cancel=True)

    def _close_pools(self) -> None:
        with contextlib.suppress(Exception):
            self._app.close()

    async def send(self, work: Sequence[WorkItem]) -> None:
        items = list(work)
        if not items:
            return
        try:
            with anyio.fail_after(self._settings.dispatch_timeout_s):
                # abandon_on_cancel: at the deadline the thread is left to end on its own
                # (the broker's socket timeout bounds it); the caller goes on now.
                await anyio.to_thread.run_sync(send_work, self._app, items, abandon_on_cancel=True)
        except Exception as exc:  # TimeoutError, the broker's connection errors, ...
            self.failures += 1
            self.failed_items += len(items)
            _count_failed(self._metrics, len(items))
            log.warning(
                "job work not sent to the broker; the reconciler sends it again",
                extra={"items": len(items), "error": type(exc).__name__},
            )

    async def ping(self) -> None:
        """Readiness: Redis PING, or one AMQP connection; raises when the broker is down."""
        if self._redis is not None:
            with anyio.fail_after(self._settings.dispatch_timeout_s):
                await self._redis.ping()
            return
        with anyio.fail_after(self._settings.dispatch_timeout_s):
            await anyio.to_thread.run_sync(self._amqp_ping, abandon_on_cancel=True)

    def _amqp_ping(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=AMQP_PING_S)

    async def depth(self) -> int | None:
        """Tasks waiting in the broker's queue (LLEN on Redis); None for AMQP."""
        if self._redis is None:
            return None
        with anyio.fail_after(self._settings.dispatch_timeout_s):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in queue_keys(self._settings.queue):
                    pipe.llen(key)
                sizes = await pipe.execute()
        return sum(int(size) for size in sizes)


def _count_failed(metrics: Metrics | None, items: int) -> None:
    if metrics is not None:
        metrics.job_dispatch_failures.inc(items)
