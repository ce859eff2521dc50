from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from ..deps import MetricsDep, ServicesDep, StartedDep
from ..jobs.executors import executor_kind
from ..responses import OrjsonResponse
from ..schemas.health import HealthResponse
from ..services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=HealthResponse, summary="The process answers")
async def live() -> object:
    return OrjsonResponse({"status": "ok", "components": {}})


@router.get(
    "/health/startup",
    response_model=HealthResponse,
    summary="Start-up finished (catalog loaded, clients open)",
)
async def startup(started: StartedDep) -> object:
    if started:
        return OrjsonResponse({"status": "ok", "components": {}})
    return OrjsonResponse(
        {"status": "starting", "components": {}}, status_code=503, headers={"Retry-After": "1"}
    )


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse}},
    summary="Triton, each required model and Redis (when configured) are up; the database "
    "and the job broker are reported",
)
async def ready(services: ServicesDep) -> object:
    settings = services.settings

    def check() -> Awaitable[tuple[int, dict[str, Any]]]:
        return readiness(
            services.triton,
            services.catalog,
            settings.triton.required_models,
            services.redis,
            # Fail-closed: without Redis nothing is served, so take this replica out.
            redis_required=settings.auth.redis_failure_policy == "closed",
            database=services.database,
            broker=services.dispatcher if executor_kind(settings.jobs) == "celery" else None,
            outbox=services.notifier,
        )

    # Unauthenticated and unthrottled: a recent answer is reused (ReadinessCache).
    status, body = await services.readiness.get(check)
    headers = {"Retry-After": "1"} if status == 503 else None
    return OrjsonResponse(body, status_code=status, headers=headers)


@router.get("/metrics", include_in_schema=False)
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
