from __future__ import annotations

from fastapi import APIRouter

from ..deps import CatalogDep, LimitedDep, RouterDep, TritonDep
from ..schemas.common import error_responses
from ..schemas.models import ModelInfo, ModelList
from ..services import models as service

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get(
    "",
    response_model=ModelList,
    responses=error_responses(401, 429),
    summary="Served models, versions and readiness",
)
async def list_models(
    _caller: LimitedDep, catalog: CatalogDep, triton: TritonDep, routing: RouterDep
) -> object:
    return await service.list_models(catalog, triton, routing)


@router.get(
    "/{model}",
    response_model=ModelInfo,
    responses=error_responses(401, 404, 429),
    summary="One model: task, versions and their status, labels, limits",
)
async def get_model(
    _caller: LimitedDep, model: str, catalog: CatalogDep, triton: TritonDep, routing: RouterDep
) -> object:
    return await service.get_model(catalog, triton, routing, model)
