"""OpenAI /v1/chat/completions and /v1/completions answers: the whole answers and the
chunks of a stream (`data: {chunk}` frames).

The official client's models (openai.types.chat.ChatCompletion, ChatCompletionChunk,
openai.types.Completion) are the checklist: every field they require is here, so they
parse what we send (tests/unit/test_openai_shapes.py parses every shape with them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# content_filter is reserved for content policies (none yet); tool_calls: the choice
# ended with calls for the caller to run.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
CompletionFinishReason = Literal["stop", "length", "content_filter"]


def _unset(value: object) -> bool:
    return value is None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int  # over every choice
    total_tokens: int


# --- logprobs ----------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float  # -9999.0: outside the distribution sampled from (JSON has no -inf)
    bytes: list[int] | None  # the token's exact UTF-8 bytes (`token` may be a fragment)


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]  # the most likely tokens, descending


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: None = None


class CompletionLogprobs(BaseModel):
    """The legacy shape, one list entry per token. With echo the prompt's tokens come
    first, and the first of them has no logprob (nothing predicts it): null in
    token_logprobs and in top_logprobs."""

    tokens: list[str]
    token_logprobs: list[float | None]
    # {token: logprob} of the most likely tokens, and the chosen one.
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]  # each token's character offset into the choice's text


# --- tool calls --------------------------------------------------------------------------


class ToolCallFunction(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class DeltaToolCall(BaseModel):
    """A whole call in one chunk (the model's calls are known when the choice ends)."""

    index: int  # the call's place in the message's tool_calls
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


# --- the whole answers -------------------------------------------------------------------


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None  # null when the answer is tool calls alone
    tool_calls: list[ToolCall] | None = Field(None, exclude_if=_unset)
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    service_tier: Literal["default"] = "default"  # one tier here
    system_fingerprint: None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: CompletionFinishReason
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: None = None


# --- the chunks of a stream --------------------------------------------------------------


class ChatDelta(BaseModel):
    """What a chunk adds: the role once (a choice's first chunk), then text, then its tool
    calls; empty in the choice's last."""

    role: Literal["assistant"] | None = Field(None, exclude_if=_unset)
    content: str | None = Field(None, exclude_if=_unset)
    tool_calls: list[DeltaToolCall] | None = Field(None, exclude_if=_unset)


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]  # none in the usage chunk
    # Sent (null until the usage chunk) only when the request asked for usage.
    usage: Usage | None = None


class CompletionChunkChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: CompletionFinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"  # the same as the whole answer
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None
