from __future__ import annotations

from fastapi import APIRouter, Request

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
from ..schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from .common import answer_response, call_context, note_model

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post(
    "/embeddings",
    response_model=EmbeddingResponse,
    # Invalid input is 400 here, as OpenAI answers it (handlers.OPENAI_PATHS), not 422.
    responses=error_responses(400, 401, 403, 404, 413, 429, 503, 504),
    summary="OpenAI-compatible embeddings",
)
async def create_embeddings(
    caller: InFlightDep,
    body: EmbeddingRequest,
    request: Request,
    service: InferenceDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    x_model_version: ModelVersionHeader = None,
) -> object:
    scopes.require(caller, route="embeddings", model=body.model)
    note_model(request, catalog, body.model)
    call = call_context(request, caller, settings)
    answer = await service.embed(body, x_model_version, request_id, call)
    return answer_response(request, answer, metrics)
