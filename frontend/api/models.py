from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import CatalogDep, LimitedDep, TritonDep
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
    _caller: LimitedDep, request: Request, catalog: CatalogDep, triton: TritonDep
) -> object:
    return await service.list_models(catalog, triton, request.app.state.router)


@router.get(
    "/{model}",
    response_model=ModelInfo,
    responses=error_responses(401, 404, 429),
    summary="One model: task, versions and their status, labels, limits",
)
async def get_model(
    _caller: LimitedDep, request: Request, model: str, catalog: CatalogDep, triton: TritonDep
) -> object:
    return await service.get_model(catalog, triton, request.app.state.router, model)
