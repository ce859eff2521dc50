"""Every Redis call goes through here: a deadline, error translation, and a circuit
breaker (frontend/breaker.py): after a failed call, requests stop calling Redis at once
(StateUnavailable; the failure policy decides) and one background task pings Redis
every `probe_s` until it answers."""

from __future__ import annotations

from redis.exceptions import RedisError

from ..breaker import Breaker
from ..errors import StateUnavailable
from ..observability.metrics import Metrics

FAILURES = (RedisError, OSError, TimeoutError)


def _unavailable() -> StateUnavailable:
    return StateUnavailable("shared state is unreachable", {"retry_after_s": 1})


class RedisGuard(Breaker):
    def __init__(self, metrics: Metrics, deadline_s: float, probe_s: float) -> None:
        super().__init__(
            "redis",
            deadline_s=deadline_s,
            probe_s=probe_s,
            failures=FAILURES,
            unavailable=_unavailable,
            on_up=lambda up: metrics.redis_up.set(int(up)),
            on_error=lambda operation, error: metrics.redis_errors.labels(operation, error).inc(),
        )
