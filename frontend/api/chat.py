"""OpenAI-compatible text generation: /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import ServerSentEvent

from ..deps import LimitedDep, RequestIdDep
from ..schemas.chat import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from ..schemas.common import error_responses
from ..services.generation import Generation, GenerationService
from ..sse import EventStream, data, with_error_event

router = APIRouter(prefix="/v1", tags=["generation"])

STREAM_DOC = (
    "With `stream: true` the answer is `text/event-stream`: `data: {chunk}` frames, "
    "`: ping` comments while waiting, `data: [DONE]` at the end; a failure after the "
    "first frame is an `event: error` frame with the error envelope, then `[DONE]`."
)


RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 401, 404, 413, 422, 429, 503, 504),
    200: {"content": {"text/event-stream": {}}, "description": STREAM_DOC},
}


async def _service(request: Request) -> GenerationService:
    return request.app.state.generation


GenerationDep = Annotated[GenerationService, Depends(_service)]


def _head(g: Generation, kind: str) -> dict[str, Any]:
    return {"id": g.id, "object": kind, "created": g.created, "model": g.model}


async def _collect(g: Generation) -> str:
    try:
        return "".join([u.text async for u in g.updates()])
    finally:
        await g.close()


def _respond(request: Request, g: Generation, frames: AsyncIterator[ServerSentEvent]) -> Any:
    request.state.model, request.state.version = g.model, g.stream.version
    keepalive = request.app.state.settings.generation.keepalive_s
    rid = getattr(request.state, "request_id", None)
    return EventStream(with_error_event(frames, rid), g.close, keepalive)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=RESPONSES,
    summary="OpenAI-compatible chat completion (any role; streams with `stream: true`)",
)
async def chat_completions(
    caller: LimitedDep,
    body: ChatCompletionRequest,
    request: Request,
    service: GenerationDep,
    request_id: RequestIdDep,
) -> Any:
    g = await service.chat(body, caller, request_id)
    if not body.stream:
        content = await _collect(g)
        request.state.model, request.state.version = g.model, g.stream.version
        return {
            **_head(g, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": g.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": g.usage(),
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        head = _head(g, "chat.completion.chunk")
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, str], finish: str | None = None) -> ServerSentEvent:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return data({**head, "choices": [choice], **extra})

        yield chunk({"role": "assistant", "content": ""})
        async for update in g.updates():
            if update.text:
                yield chunk({"content": update.text})
            if update.finish_reason:
                yield chunk({}, update.finish_reason)
        if include_usage:
            yield data({**head, "choices": [], "usage": g.usage()})

    return _respond(request, g, frames())


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=RESPONSES,
    summary="OpenAI-compatible text completion of a raw prompt (any role)",
)
async def completions(
    caller: LimitedDep,
    body: CompletionRequest,
    request: Request,
    service: GenerationDep,
    request_id: RequestIdDep,
) -> Any:
    g = await service.complete(body, caller, request_id)
    if not body.stream:
        text = await _collect(g)
        request.state.model, request.state.version = g.model, g.stream.version
        return {
            **_head(g, "text_completion"),
            "choices": [
                {"index": 0, "text": text, "finish_reason": g.finish_reason, "logprobs": None}
            ],
            "usage": g.usage(),
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        head = _head(g, "text_completion")
        extra = {"usage": None} if include_usage else {}
        async for update in g.updates():
            if update.text or update.finish_reason:
                choice = {
                    "index": 0,
                    "text": update.text,
                    "finish_reason": update.finish_reason or None,
                    "logprobs": None,
                }
                yield data({**head, "choices": [choice], **extra})
        if include_usage:
            yield data({**head, "choices": [], "usage": g.usage()})

    return _respond(request, g, frames())
