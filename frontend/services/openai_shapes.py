"""The OpenAI wire shapes of one generation, typed (frontend/schemas/chat_responses.py):
the whole answer of a request without `stream`, and the `data:` frames of one with it.
The routes return what these give; nothing else knows the shapes.

A stream, per choice (`index`; with n > 1 the choices' chunks interleave as the model
answers): chat opens with the assistant's role (every choice's role chunk comes first),
then one chunk per step that has text (or, when asked, logprob entries: `logprobs` on
every such chunk), then at the choice's end one chunk per tool call (`delta.tool_calls`,
a whole call each) and one with the finish reason and an empty delta. A completion sends,
with echo, the prompt first (and its tokens' logprobs), then one chunk per step that has
text, entries or the finish reason. With `stream_options.include_usage` every chunk has
`usage: null` and a last chunk (no choices) has the usage; without it there is no `usage`
key at all. Without n, logprobs, echo or tools the frames are what they were before those
existed (tests/unit/test_openai_shapes.py pins them byte for byte).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sse_starlette import ServerSentEvent

from ..schemas.chat_responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionResponse,
    DeltaToolCall,
    ToolCall,
    Usage,
)
from ..sse import data
from ..triton.client import LogprobEntry
from .generation import Generation
from .openai_logprobs import LegacyLogprobs, chat_logprobs, joined

_NO_USAGE = {"usage"}


@dataclass
class _Choice:
    """One choice of a whole answer, gathered from its steps."""

    texts: list[str] = field(default_factory=list)
    entries: list[LogprobEntry] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)


async def chat_completion(g: Generation) -> ChatCompletionResponse:
    gathered = await _gather(g)
    choices = []
    for i, got in enumerate(gathered):
        calls = [ToolCall.model_validate(c) for c in got.tool_calls]
        # OpenAI's content is null when the answer is tool calls alone. The text before a
        # call is kept as it came (its whitespace too): a stream sends it before anyone
        # knows a call follows, and the whole answer says what the stream said.
        content = (got.text or None) if calls else got.text
        message = AssistantMessage(content=content, tool_calls=calls or None)
        logprobs = chat_logprobs(got.entries) if g.show_logprobs else None
        choices.append(
            ChatChoice(
                index=i, message=message, finish_reason=g.finish_reasons[i], logprobs=logprobs
            )
        )
    return ChatCompletionResponse(
        id=g.id, created=g.created, model=g.model, choices=choices, usage=g.usage()
    )


async def completion(g: Generation) -> CompletionResponse:
    gathered = await _gather(g)
    echo = g.echo or ""
    choices = []
    for i, got in enumerate(gathered):
        logprobs = None
        if g.show_logprobs:
            parts = [_echo_logprobs(g)] if g.echo is not None else []
            logprobs = joined(*parts, LegacyLogprobs(len(echo)).take(got.entries))
        choices.append(
            CompletionChoice(
                index=i,
                text=echo + got.text,
                finish_reason=g.finish_reasons[i],
                logprobs=logprobs,
            )
        )
    return CompletionResponse(
        id=g.id, created=g.created, model=g.model, choices=choices, usage=g.usage()
    )


async def chat_chunks(g: Generation, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> ServerSentEvent:
        whole = ChatCompletionChunk(
            id=g.id, created=g.created, model=g.model, choices=choices, usage=usage
        )
        return _frame(whole, include_usage)

    def one(i: int, delta: ChatDelta, **fields: Any) -> ServerSentEvent:
        return chunk([ChatChunkChoice(index=i, delta=delta, **fields)])

    for i in range(g.n):
        yield one(i, ChatDelta(role="assistant", content=""))
    async for step in g.updates():
        i = step.index
        if step.text or (g.show_logprobs and step.logprobs):
            logprobs = chat_logprobs(step.logprobs or ()) if g.show_logprobs else None
            yield one(i, ChatDelta(content=step.text), logprobs=logprobs)
        if step.finish_reason:
            for k, call in enumerate(step.tool_calls or ()):
                delta_call = DeltaToolCall.model_validate({"index": k, **call})
                yield one(i, ChatDelta(tool_calls=[delta_call]))
            yield one(i, ChatDelta(), finish_reason=step.finish_reason)
    if include_usage:
        yield chunk([], g.usage())


async def completion_chunks(g: Generation, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    def chunk(choices: list[CompletionChunkChoice], usage: Usage | None = None) -> ServerSentEvent:
        whole = CompletionChunk(
            id=g.id, created=g.created, model=g.model, choices=choices, usage=usage
        )
        return _frame(whole, include_usage)

    # Per choice: the generated tokens' offsets continue after the echoed prompt.
    offsets = [LegacyLogprobs(len(g.echo or "")) for _ in range(g.n)]
    if g.echo is not None:
        for i in range(g.n):
            logprobs = _echo_logprobs(g) if g.show_logprobs else None
            yield chunk([CompletionChunkChoice(index=i, text=g.echo, logprobs=logprobs)])
    async for step in g.updates():
        i = step.index
        if step.text or step.finish_reason or (g.show_logprobs and step.logprobs):
            logprobs = offsets[i].take(step.logprobs or ()) if g.show_logprobs else None
            finish = step.finish_reason or None
            choice = CompletionChunkChoice(
                index=i, text=step.text, finish_reason=finish, logprobs=logprobs
            )
            yield chunk([choice])
    if include_usage:
        yield chunk([], g.usage())


def _echo_logprobs(g: Generation) -> CompletionLogprobs:
    return LegacyLogprobs(0).take(g.prompt_logprobs or ())


async def _gather(g: Generation) -> list[_Choice]:
    choices = [_Choice() for _ in range(g.n)]
    try:
        async for step in g.updates():
            got = choices[step.index]
            got.texts.append(step.text)
            got.entries += step.logprobs or ()
            got.tool_calls += step.tool_calls or ()
    finally:
        await g.close()
    return choices


def _frame(chunk: BaseModel, include_usage: bool) -> ServerSentEvent:
    return data(chunk.model_dump(exclude=None if include_usage else _NO_USAGE))
