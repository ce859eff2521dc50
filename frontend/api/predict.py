from __future__ import annotations

from fastapi import APIRouter, Path, Request

from ..auth import scopes
from ..deps import (
    CatalogDep,
    InferenceDep,
    InFlightDep,
    MetricsDep,
    ModelVersionHeader,
    RequestIdDep,
    SettingsDep,
)
from ..schemas.common import error_responses
from ..schemas.predict import PredictRequest, PredictResponse
from .common import answer_response, call_context, note_model

router = APIRouter(prefix="/v1/models", tags=["predict"])
ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 503, 504)
ModelPath = Path(description="Model name, e.g. intent or sentiment", examples=["intent"])


@router.post(
    "/{model}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Classify one text or a batch (default version, or X-Model-Version)",
)
async def predict(
    caller: InFlightDep,
    model: str,
    body: PredictRequest,
    request: Request,
    service: InferenceDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    x_model_version: ModelVersionHeader = None,
) -> object:
    scopes.require(caller, route="predict", model=model)
    note_model(request, catalog, model)
    answer = await service.predict(
        model, x_model_version, body, request_id, call_context(request, caller, settings)
    )
    return answer_response(request, answer, metrics)


@router.post(
    "/{model}/versions/{version}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Classify with an explicit model version",
)
async def predict_version(
    caller: InFlightDep,
    model: str,
    version: str,
    body: PredictRequest,
    request: Request,
    service: InferenceDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> object:
    scopes.require(caller, route="predict", model=model)
    note_model(request, catalog, model)
    call = call_context(request, caller, settings)
    answer = await service.predict(model, version, body, request_id, call)
    return answer_response(request, answer, metrics)
