"""Every Redis call goes through here: a deadline, error translation, and a short
cool-down after a failure so that no request waits on a dead Redis more than once per
cool-down. Transitions are logged once and exported as metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from ..errors import StateUnavailable
from ..observability.metrics import Metrics

log = logging.getLogger("infergate.redis")
T = TypeVar("T")


class RedisGuard:
    def __init__(self, metrics: Metrics, deadline_s: float, cooldown_s: float) -> None:
        self._metrics = metrics
        self._deadline_s = deadline_s
        self._cooldown_s = cooldown_s
        self._skip_until = 0.0
        self.up = True
        metrics.redis_up.set(1)

    @property
    def retry_after_s(self) -> int:
        return max(1, round(self._cooldown_s))

    async def run(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() < self._skip_until:
            self._metrics.redis_errors.labels(operation, "skipped").inc()
            raise StateUnavailable("shared state is unreachable", {"retry_after_s": 1})
        try:
            async with asyncio.timeout(self._deadline_s):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            raise StateUnavailable("shared state is unreachable", {"retry_after_s": 1}) from None
        if not self.up:
            self.up = True
            self._metrics.redis_up.set(1)
            log.warning("redis reachable again")
        return result

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self._cooldown_s
        self._metrics.redis_errors.labels(operation, type(exc).__name__).inc()
        if self.up:
            self.up = False
            self._metrics.redis_up.set(0)
            # The class name only: redis messages can carry the URL (and its password).
            log.warning(
                "redis unreachable", extra={"operation": operation, "error": type(exc).__name__}
            )
