"""OpenAI-compatible text generation: /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import ServerSentEvent

from ..deps import GenerationBodyCap, GenerationDep, LimitedDep, RequestIdDep
from ..schemas.chat import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    SamplingFields,
)
from ..schemas.common import error_responses
from ..services.generation import Generation
from ..sse import EventStream, data, with_error_event
from ..triton.generate import Update

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


@dataclass(frozen=True)
class _Shape:
    """What differs between the two OpenAI shapes; `_answer` does the rest."""

    object: str
    chunk_object: str
    whole: Callable[[str], dict[str, Any]]  # the choice's content, not streamed
    pieces: Callable[[Update], list[dict[str, Any]]]  # streamed choices for one update
    opening: tuple[dict[str, Any], ...] = ()  # streamed before the first update


def _chat_pieces(u: Update) -> list[dict[str, Any]]:
    text = [{"delta": {"content": u.text}, "finish_reason": None}] if u.text else []
    return text + ([{"delta": {}, "finish_reason": u.finish_reason}] if u.finish_reason else [])


CHAT = _Shape(
    "chat.completion",
    "chat.completion.chunk",
    lambda text: {"message": {"role": "assistant", "content": text}},
    _chat_pieces,
    ({"delta": {"role": "assistant", "content": ""}, "finish_reason": None},),
)
COMPLETION = _Shape(
    "text_completion",
    "text_completion",
    lambda text: {"text": text},
    lambda u: (
        [{"text": u.text, "finish_reason": u.finish_reason or None}]
        if u.text or u.finish_reason
        else []
    ),
)


def _head(g: Generation, kind: str) -> dict[str, Any]:
    return {"id": g.id, "object": kind, "created": g.created, "model": g.model}


async def _answer(request: Request, g: Generation, body: SamplingFields, shape: _Shape) -> Any:
    request.state.model, request.state.version = g.model, g.stream.version
    if not body.stream:
        try:
            text = "".join([u.text async for u in g.updates()])
        finally:
            await g.close()
        choice = {"index": 0, **shape.whole(text), "finish_reason": g.finish_reason}
        return {
            **_head(g, shape.object),
            "choices": [{**choice, "logprobs": None}],
            "usage": g.usage(),
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = _head(g, shape.chunk_object)
    extra = {"usage": None} if include_usage else {}

    def chunk(choice: dict[str, Any]) -> ServerSentEvent:
        return data({**head, "choices": [{"index": 0, **choice, "logprobs": None}], **extra})

    async def frames() -> AsyncIterator[ServerSentEvent]:
        for choice in shape.opening:
            yield chunk(choice)
        async for update in g.updates():
            for choice in shape.pieces(update):
                yield chunk(choice)
        if include_usage:
            yield data({**head, "choices": [], "usage": g.usage()})

    keepalive = request.app.state.settings.generation.keepalive_s
    rid = getattr(request.state, "request_id", None)
    return EventStream(with_error_event(frames(), rid), g.close, keepalive)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=RESPONSES,
    dependencies=[GenerationBodyCap],
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
    return await _answer(request, g, body, CHAT)


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=RESPONSES,
    dependencies=[GenerationBodyCap],
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
    return await _answer(request, g, body, COMPLETION)
