from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import (
    InferenceDep,
    LimitedDep,
    MetricsDep,
    ModelVersionHeader,
    RequestIdDep,
    SettingsDep,
)
from ..schemas.common import error_responses
from ..schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from .common import answer_response, call_context

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post(
    "/embeddings",
    response_model=EmbeddingResponse,
    responses=error_responses(400, 401, 404, 413, 422, 429, 503, 504),
    summary="OpenAI-compatible embeddings",
)
async def create_embeddings(
    caller: LimitedDep,
    body: EmbeddingRequest,
    request: Request,
    service: InferenceDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    x_model_version: ModelVersionHeader = None,
) -> object:
    call = call_context(request, caller, settings)
    answer = await service.embed(body, x_model_version, request_id, call)
    return answer_response(request, answer, metrics)
