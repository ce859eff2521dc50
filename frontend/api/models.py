from __future__ import annotations

from fastapi import APIRouter

from ..auth import scopes
from ..deps import CatalogDep, LimitedDep, RouterDep, SettingsDep, TritonDep
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
    caller: LimitedDep,
    catalog: CatalogDep,
    triton: TritonDep,
    routing: RouterDep,
    settings: SettingsDep,
) -> object:
    names = scopes.visible(caller, catalog.names())
    repository = settings.triton.model_repository
    return await service.list_models(catalog, triton, routing, repository, names)


@router.get(
    "/{model}",
    response_model=ModelInfo,
    responses=error_responses(401, 403, 404, 429),
    summary="One model: task, versions and their status, labels, limits",
)
async def get_model(
    caller: LimitedDep,
    model: str,
    catalog: CatalogDep,
    triton: TritonDep,
    routing: RouterDep,
    settings: SettingsDep,
) -> object:
    if caller.models is not None and model in catalog.models:
        scopes.require(caller, route=None, model=model)
    repository = settings.triton.model_repository
    return await service.get_model(catalog, triton, routing, repository, model)
