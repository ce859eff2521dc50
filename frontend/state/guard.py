"""Every Redis call goes through here: a deadline, error translation, and a circuit
breaker. After a failed call, requests stop calling Redis at once (they get
StateUnavailable and the failure policy decides) and one background task pings Redis
every `probe_s` until it answers; then calls resume. So a dead or hung Redis costs one
deadline to the request that found it, not one per request. Transitions are logged once
and exported as metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from ..errors import StateUnavailable
from ..observability.metrics import Metrics

log = logging.getLogger("infergate.redis")
T = TypeVar("T")
FAILURES = (RedisError, OSError, TimeoutError)


class RedisGuard:
    def __init__(self, metrics: Metrics, deadline_s: float, probe_s: float) -> None:
        self._metrics = metrics
        self._deadline_s = deadline_s
        self._probe_s = probe_s
        self._ping: Callable[[], Awaitable[object]] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.up = True
        metrics.redis_up.set(1)

    def attach(self, ping: Callable[[], Awaitable[object]]) -> None:
        self._ping = ping

    async def run(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self.up:
            self._metrics.redis_errors.labels(operation, "skipped").inc()
            raise StateUnavailable("shared state is unreachable", {"retry_after_s": 1})
        try:
            async with asyncio.timeout(self._deadline_s):
                return await call()
        except FAILURES as exc:
            self._failed(operation, exc)
            raise StateUnavailable("shared state is unreachable", {"retry_after_s": 1}) from None

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.redis_errors.labels(operation, type(exc).__name__).inc()
        if not self.up:
            return
        self.up = False
        self._metrics.redis_up.set(0)
        # The class name only: redis messages can carry the URL (and its password).
        log.warning(
            "redis unreachable", extra={"operation": operation, "error": type(exc).__name__}
        )
        if self._ping is not None and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        assert self._ping is not None
        while not self.up:
            await asyncio.sleep(self._probe_s)
            try:
                async with asyncio.timeout(self._deadline_s):
                    await self._ping()
            except FAILURES:
                continue
            self.up = True
            self._metrics.redis_up.set(1)
            log.warning("redis reachable again")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
