"""Admin routes for routing (role admin): per-model routing and its history, experiment
summaries. Every change is recorded with who made it and in which request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from ..deps import AdminDep, CatalogDep, RequestIdDep, RouterDep, RoutingStatsDep
from ..errors import Conflict, NotFound
from ..routing.config import ModelRouting
from ..schemas.common import error_responses
from ..schemas.routing import RoutingHistory
from . import paging

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)


class RoutingTable(BaseModel):
    models: dict[str, ModelRouting]


class VariantSummary(BaseModel):
    version: str | None = None
    weight: float | None = None
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    labels: dict[str, int]


class ExperimentSummary(BaseModel):
    name: str
    model: str | None
    active: bool
    variants: dict[str, VariantSummary]
    shadow: dict[str, Any] | None


@router.get(
    "/routing", response_model=RoutingTable, responses=ERRORS, summary="Routing (role: admin)"
)
async def get_routing(_: AdminDep, routing: RouterDep) -> object:
    return {"models": routing.table}


@router.get(
    "/routing/{model}",
    response_model=ModelRouting,
    responses=ERRORS,
    summary="One model's routing (role: admin)",
)
async def get_model_routing(
    model: str, _: AdminDep, routing: RouterDep, catalog: CatalogDep
) -> object:
    catalog.get(model)
    return routing.table[model]


@router.put(
    "/routing/{model}",
    response_model=ModelRouting,
    responses=ERRORS,
    summary="Replace a model's routing; every worker applies it within a second (role: admin)",
)
async def put_model_routing(
    model: str,
    body: ModelRouting,
    principal: AdminDep,
    routing: RouterDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    catalog.get(model)
    try:
        return await routing.set_model(
            model, body, actor=principal.subject, request_id=request_id or None
        )
    except ValueError as exc:  # well-formed, but names versions that cannot serve
        raise Conflict(str(exc)) from None


@router.delete(
    "/routing/{model}",
    response_model=ModelRouting,
    responses=ERRORS,
    summary="Back to the routing file's defaults for this model (role: admin)",
)
async def reset_model_routing(
    model: str,
    principal: AdminDep,
    routing: RouterDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> object:
    catalog.get(model)
    return await routing.set_model(
        model, None, actor=principal.subject, request_id=request_id or None
    )


@router.get(
    "/routing/{model}/history",
    response_model=RoutingHistory,
    responses=ERRORS,
    summary="A model's routing changes, newest first: who, when, in which request, the "
    "routing before and after (null: the routing file's defaults) (role: admin)",
)
async def model_routing_history(
    model: str,
    _: AdminDep,
    routing: RouterDep,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> object:
    rows = await routing.history(model, limit=limit + 1, before=paging.before(cursor))
    shown, next_cursor = paging.page(rows, limit)
    return {"model": model, "data": shown, "next_cursor": next_cursor}


@router.get(
    "/experiments/{name}",
    response_model=ExperimentSummary,
    responses=ERRORS,
    summary="Per variant: requests, p50/p95 latency, error rate, labels; shadow agreement "
    "(role: admin)",
)
async def experiment_summary(
    name: str, _: AdminDep, routing: RouterDep, stats: RoutingStatsDep
) -> object:
    counted = await stats.experiment(name) or {}
    model: str | None = None
    configured: dict[str, Any] = {}
    for model_name, model_routing in routing.table.items():
        experiment = model_routing.experiment
        if experiment is not None and experiment.name == name:
            model = model_name
            configured = dict(experiment.variants)
    if not counted and not configured:
        raise NotFound(f"no experiment {name!r}")
    empty: dict[str, Any] = {
        "requests": 0,
        "errors": 0,
        "error_rate": None,
        "p50_ms": None,
        "p95_ms": None,
        "labels": {},
    }
    variants = {}
    for variant in sorted(set(counted) | set(configured)):
        entry = {**empty, **counted.get(variant, {})}
        if variant in configured:
            entry["version"] = configured[variant].version
            entry["weight"] = configured[variant].weight
        variants[variant] = entry
    return {
        "name": name,
        "model": model,
        "active": model is not None,
        "variants": variants,
        "shadow": await stats.shadow(model) if model else None,
    }
