"""Liveness, readiness, startup. Readiness checks Triton and each model concurrently, each
with its own short deadline, and reports per-component status and latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..triton.client import TritonClient
from .catalog import Catalog


async def _timed(check: Any) -> tuple[bool, float, str | None]:
    started = time.perf_counter()
    try:
        ok = bool(await check)
        detail = None
    except Exception as exc:  # a probe must answer, whatever the dependency does
        ok, detail = False, type(exc).__name__
    return ok, round((time.perf_counter() - started) * 1000, 2), detail


async def readiness(
    triton: TritonClient,
    catalog: Catalog,
    required: list[str],
    redis: Any = None,
    redis_required: bool = False,
) -> tuple[int, dict[str, Any]]:
    names = catalog.names()
    required_set = set(required or names)
    checks = {"triton": triton.server_ready()}
    for name in names:
        checks[f"model:{name}"] = triton.model_ready(name)
    if redis is not None:
        checks["redis"] = redis.ping()
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
