"""Liveness, readiness, startup. Readiness checks Triton and each model concurrently, each
with its own short deadline, and reports per-component status and latency; its answer is
reused for a short while (ReadinessCache)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..catalog import Catalog
from ..triton.client import TritonClient


async def _timed(check: Any) -> tuple[bool, float, str | None]:
    started = time.perf_counter()
    try:
        ok = bool(await check)
        detail = None
    except Exception as exc:  # a probe must answer, whatever the dependency does
        ok, detail = False, type(exc).__name__
    return ok, round((time.perf_counter() - started) * 1000, 2), detail


async def _answered(call: Awaitable[None]) -> bool:
    await call
    return True


async def readiness(
    triton: TritonClient,
    catalog: Catalog,
    required: list[str],
    redis: Any = None,
    redis_required: bool = False,
    database: Any = None,
    broker: Any = None,
    outbox: Any = None,
) -> tuple[int, dict[str, Any]]:
    """The database is never required: with it down, held keys keep being served (new
    credentials get 503), so the replica stays in rotation as "degraded". Nor is the job
    broker (`broker`: the Celery dispatcher, when jobs run on Celery): with it down, jobs
    are still accepted into SQL and the reconciler sends their work once it is back. Nor
    is the notification outbox (`outbox`: down while it holds more due deliveries, or
    older ones, than notify.backlog_degraded / oldest_degraded_s): nothing is lost while
    it backs up, deliveries are only late."""
    names = catalog.names()
    required_set = set(required or names)
    checks = {"triton": triton.server_ready()}
    for name in names:
        checks[f"model:{name}"] = triton.model_ready(name)
    if redis is not None:
        checks["redis"] = redis.ping()
    if database is not None:
        checks["database"] = _answered(database.ping())
    if broker is not None:
        checks["broker"] = _answered(broker.ping())
    if outbox is not None:
        checks["outbox"] = _answered(outbox.check_backlog())
    results = await asyncio.gather(*(_timed(c) for c in checks.values()))
    components: dict[str, dict[str, Any]] = {}
    for key, (ok, latency, detail) in zip(checks, results, strict=True):
        is_required = (
            key == "triton"
            or key.removeprefix("model:") in required_set
            or (key == "redis" and redis_required)
        )
        components[key] = {
            "status": "up" if ok else "down",
            "required": is_required,
            "latency_ms": latency,
            "detail": detail,
        }
    if not names:
        components["catalog"] = {
            "status": "down",
            "required": True,
            "latency_ms": None,
            "detail": "no model cards found",
        }
    down_required = [k for k, c in components.items() if c["status"] == "down" and c["required"]]
    down_optional = [
        k for k, c in components.items() if c["status"] == "down" and not c["required"]
    ]
    if down_required:
        return 503, {"status": "not_ready", "components": components}
    status = "degraded" if down_optional else "ready"
    return 200, {"status": status, "components": components}


class ReadinessCache:
    """/health/ready is unauthenticated and unthrottled, and one check asks Triton once
    per model plus once for the server: a ready answer is reused for `ttl_s` after a check
    ends, and callers that arrive while a check runs wait for that one. So a flood costs
    Triton at most one check per interval per worker, and a probe still sees a change
    within `ttl_s` plus one check."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._answer: tuple[int, dict[str, Any]] | None = None
        self._checked_at = 0.0
        self._running: asyncio.Future[tuple[int, dict[str, Any]]] | None = None

    async def get(
        self, check: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> tuple[int, dict[str, Any]]:
        if self._answer is not None and self._clock() - self._checked_at < self._ttl_s:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh(check))
        # Shielded: a caller that goes away must not cancel the check the others wait on.
        return await asyncio.shield(self._running)

    async def _refresh(
        self, check: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> tuple[int, dict[str, Any]]:
        try:
            answer = await check()
            # Only a ready answer is reused: a service coming back is seen at the next
            # probe (the reliability figure is recovery < 2 s), and a check against a down
            # Triton is cheap (refused at once; concurrent callers still share it).
            if answer[0] == 200:
                self._answer, self._checked_at = answer, self._clock()
            else:
                self._answer = None
            return answer
        finally:
            self._running = None
