"""OpenAI /v1/chat/completions and /v1/completions shapes (the parts this server
supports; anything else is refused rather than silently ignored)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .common import Integer, PositiveInteger, Strict

NonEmpty = Annotated[str, Field(min_length=1)]
Stop = NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=4)] | None
FinishReason = Literal["stop", "length"]


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    # No bound here: the route's body cap bounds it, and every message's content together
    # is checked against the prompt's character cap (400 prompt_too_long, a setting).
    content: str


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    """Shared by both routes. Limits on max_tokens come from the model card (400)."""

    model: str = Field(examples=["chat"])
    # The upper bound is the model's (its card); the served OpenAPI names it.
    max_tokens: PositiveInteger | None = Field(None, description="Tokens to generate at most.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy (deterministic).")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: Integer = Field(0, ge=0, le=1000, description="Extension: 0 = off.")
    # No bounds in the schema: generators compare huge integer bounds as floats (a
    # "valid" 2**63 + 191 was generated against lt=2**63); any integer is taken modulo 2**63.
    seed: Integer | None = Field(None, description="Same seed, same request: same text.")
    stop: Stop = Field(None, description="Up to 4 sequences; the text ends before them.")
    n: Integer = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: PositiveInteger | None = Field(None, description="Alias of max_tokens.")


class CompletionRequest(SamplingFields):
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list of one is accepted)."
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
