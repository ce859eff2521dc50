"""OpenAI-compatible text generation: /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import ServerSentEvent

from ..auth import scopes
from ..context import context
from ..deps import (
    CatalogDep,
    GenerationBodyCap,
    GenerationDep,
    InFlightDep,
    RequestIdDep,
    SettingsDep,
)
from ..schemas.chat import ChatCompletionRequest, CompletionRequest
from ..schemas.chat_responses import ChatCompletionResponse, CompletionResponse
from ..schemas.common import error_responses
from ..services import openai_shapes
from ..services.generation import Generation
from ..sse import EventStream, with_error_event
from .common import note_model

router = APIRouter(prefix="/v1", tags=["generation"])

STREAM_DOC = (
    "With `stream: true` the answer is `text/event-stream`: `data: {chunk}` frames, "
    "`: ping` comments while waiting, `data: [DONE]` at the end; a failure after the "
    "first frame is an `event: error` frame with the error envelope, then `[DONE]`."
)


RESPONSES: dict[int | str, dict[str, Any]] = {
    # Invalid input is 400 here, as OpenAI answers it (handlers.OPENAI_PATHS), not 422.
    **error_responses(400, 401, 403, 404, 413, 429, 503, 504),
    200: {"content": {"text/event-stream": {}}, "description": STREAM_DOC},
}


def _answered_by(request: Request, g: Generation) -> None:
    ctx = context(request)  # named in the access log and the request metrics
    ctx.model, ctx.version = g.model, g.version
    # The usage ledger: one item, and the tokens as the generation counts them (the
    # counts are in the context before a stream's last frame leaves).
    ctx.items = 1
    g.report_to(ctx)


def _stream(
    frames: AsyncIterator[ServerSentEvent], g: Generation, request_id: str, keepalive_s: float
) -> EventStream:
    # The stream's end, however it comes, closes the generation (cancel, settle tokens).
    return EventStream(with_error_event(frames, request_id), g.close, keepalive_s)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=RESPONSES,
    dependencies=[GenerationBodyCap],
    summary="OpenAI-compatible chat completion (any role; streams with `stream: true`)",
)
async def chat_completions(
    caller: InFlightDep,
    body: ChatCompletionRequest,
    request: Request,
    service: GenerationDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> ChatCompletionResponse | EventStream:
    scopes.require(caller, route="chat", model=body.model)
    note_model(request, catalog, body.model)
    g = await service.chat(body, caller, request_id)
    _answered_by(request, g)
    if not body.stream:
        return await openai_shapes.chat_completion(g)
    frames = openai_shapes.chat_chunks(g, body.include_usage())
    return _stream(frames, g, request_id, settings.generation.keepalive_s)


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=RESPONSES,
    dependencies=[GenerationBodyCap],
    summary="OpenAI-compatible text completion of a raw prompt (any role)",
)
async def completions(
    caller: InFlightDep,
    body: CompletionRequest,
    request: Request,
    service: GenerationDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    request_id: RequestIdDep,
) -> CompletionResponse | EventStream:
    scopes.require(caller, route="completions", model=body.model)
    note_model(request, catalog, body.model)
    g = await service.complete(body, caller, request_id)
    _answered_by(request, g)
    if not body.stream:
        return await openai_shapes.completion(g)
    frames = openai_shapes.completion_chunks(g, body.include_usage())
    return _stream(frames, g, request_id, settings.generation.keepalive_s)
