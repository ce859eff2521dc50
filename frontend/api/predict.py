"""POST /v1/models/{model}/predict for every task the route serves: the model's task picks
the service (services/inference.py `predictor`), which reads the body itself (each task
has its own; images also come as multipart/form-data). The OpenAPI documents every body
and answer (predict_docs.py)."""

from __future__ import annotations

import re
from typing import Final

from fastapi import APIRouter, Path, Request

from ..auth import scopes
from ..auth.principal import Principal
from ..catalog import Catalog
from ..deps import (
    CatalogDep,
    InferenceDep,
    InFlightDep,
    MetricsDep,
    ModelVersionHeader,
    RequestIdDep,
    SettingsDep,
)
from ..observability.metrics import Metrics
from ..schemas.common import error_responses
from ..schemas.entities import EntitiesResponse
from ..schemas.images import ImagesResponse
from ..schemas.predict import PredictResponse
from ..schemas.summaries import SummariesResponse
from ..services.inference import InferenceService
from ..settings import LimitSettings, Settings
from .common import answer_response, call_context, note_model
from .predict_docs import openapi_extra

router = APIRouter(prefix="/v1/models", tags=["predict"])
ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 503, 504)
ModelPath = Path(description="Model name, e.g. intent or sentiment", examples=["intent"])
# What the route answers, by the model's task (documentation only: the service's answer
# is sent as it is).
PredictAnswer = PredictResponse | EntitiesResponse | ImagesResponse | SummariesResponse
_PREDICT_PATH: Final = re.compile(r"/v1/models/([^/]+)/(?:versions/[^/]+/)?predict")


def body_cap(catalog: Catalog, path: str, limits: LimitSettings) -> int | None:
    """A predict request's own body cap: limits.max_image_body_bytes for an image model
    (its body carries the images); None (the global cap) for any other request. The body
    guard asks this before any route runs (app.py)."""
    found = _PREDICT_PATH.fullmatch(path)
    model = catalog.models.get(found.group(1)) if found else None
    if model is None or model.task != "image-classification":
        return None
    return limits.max_image_body_bytes


async def _serve(
    caller: Principal,
    model: str,
    version: str | None,
    request: Request,
    service: InferenceService,
    catalog: Catalog,
    request_id: str,
    settings: Settings,
    metrics: Metrics,
) -> object:
    scopes.require(caller, route="predict", model=model)
    predictor = service.predictor(model)  # 404: not served, or served on another route
    body = await predictor.read(request, catalog.models[model])
    # Named once the body is read, as when FastAPI read it: a body refused by its schema
    # is not counted against the model.
    note_model(request, catalog, model)
    call = call_context(request, caller, settings)
    answer = await predictor.predict(model, version, body, request_id, call)
    return answer_response(request, answer, metrics)


@router.post(
    "/{model}/predict",
    response_model=PredictAnswer,
    responses=ERRORS,
    summary="Predict for one input or a batch: classify texts, find entities, classify "
    "images, summarize (default version, or X-Model-Version)",
    openapi_extra=openapi_extra(),
)
async def predict(
    caller: InFlightDep,
    model: str,
    request: Request,
    service: InferenceDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    x_model_version: ModelVersionHeader = None,
) -> object:
    return await _serve(
        caller, model, x_model_version, request, service, catalog, request_id, settings, metrics
    )


@router.post(
    "/{model}/versions/{version}/predict",
    response_model=PredictAnswer,
    responses=ERRORS,
    summary="Predict with an explicit model version",
    openapi_extra=openapi_extra(),
)
async def predict_version(
    caller: InFlightDep,
    model: str,
    version: str,
    request: Request,
    service: InferenceDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> object:
    return await _serve(
        caller, model, version, request, service, catalog, request_id, settings, metrics
    )
