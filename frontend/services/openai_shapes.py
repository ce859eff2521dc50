"""The OpenAI wire shapes of one generation, typed (frontend/schemas/chat.py): the whole
answer of a request without `stream`, and the `data:` frames of one with it. The routes
return what these give; nothing else knows the shapes.

A stream: chat opens with the assistant's role, then one chunk per step that has text,
then one with the finish reason and an empty delta; a completion sends one chunk per step
that has text or the finish reason. With `stream_options.include_usage` every chunk has
`usage: null` and a last chunk (no choices) has the usage; without it there is no
`usage` key at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel
from sse_starlette import ServerSentEvent

from ..schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionResponse,
    Usage,
)
from ..sse import data
from .generation import Generation

_NO_USAGE = {"usage"}


async def chat_completion(g: Generation) -> ChatCompletionResponse:
    text = await _whole_text(g)
    choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=g.finish_reason)
    return ChatCompletionResponse(
        id=g.id, created=g.created, model=g.model, choices=[choice], usage=g.usage()
    )


async def completion(g: Generation) -> CompletionResponse:
    text = await _whole_text(g)
    choice = CompletionChoice(text=text, finish_reason=g.finish_reason)
    return CompletionResponse(
        id=g.id, created=g.created, model=g.model, choices=[choice], usage=g.usage()
    )


async def chat_chunks(g: Generation, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> ServerSentEvent:
        whole = ChatCompletionChunk(
            id=g.id, created=g.created, model=g.model, choices=choices, usage=usage
        )
        return _frame(whole, include_usage)

    yield chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])
    async for step in g.updates():
        if step.text:
            yield chunk([ChatChunkChoice(delta=ChatDelta(content=step.text))])
        if step.finish_reason:
            yield chunk([ChatChunkChoice(delta=ChatDelta(), finish_reason=step.finish_reason)])
    if include_usage:
        yield chunk([], g.usage())


async def completion_chunks(g: Generation, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    def chunk(choices: list[CompletionChunkChoice], usage: Usage | None = None) -> ServerSentEvent:
        whole = CompletionChunk(
            id=g.id, created=g.created, model=g.model, choices=choices, usage=usage
        )
        return _frame(whole, include_usage)

    async for step in g.updates():
        if step.text or step.finish_reason:
            finish = step.finish_reason or None
            yield chunk([CompletionChunkChoice(text=step.text, finish_reason=finish)])
    if include_usage:
        yield chunk([], g.usage())


async def _whole_text(g: Generation) -> str:
    try:
        return "".join([step.text async for step in g.updates()])
    finally:
        await g.close()


def _frame(chunk: BaseModel, include_usage: bool) -> ServerSentEvent:
    return data(chunk.model_dump(exclude=None if include_usage else _NO_USAGE))
