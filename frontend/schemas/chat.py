"""OpenAI /v1/chat/completions and /v1/completions shapes (the parts this server
supports; anything else is refused rather than silently ignored): the requests, the whole
answers and the chunks of a stream."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, Field

from .common import Integer, PositiveInteger, Strict

# The sampling bounds, each written once on this side. The chat model checks the same
# numbers again for callers that reach Triton directly (export/runtime/generation.py;
# the two packages share no code, so tests/unit/test_sampling_bounds.py holds them equal).
MIN_TEMPERATURE: Final = 0  # greedy
MAX_TEMPERATURE: Final = 2
MAX_TOP_P: Final = 1  # and above 0
MIN_TOP_K: Final = 0  # off
MAX_TOP_K: Final = 1000  # this API's bound only: the model cuts at its vocabulary
MAX_STOP_SEQUENCES: Final = 4
# Triton's SEED is INT64 and the model takes it non-negative: any integer is taken modulo
# this. (No bounds in the schema: generators compare huge integer bounds as floats, so a
# "valid" 2**63 + 191 was generated against lt=2**63.)
SEED_MODULUS: Final = 2**63


def _seed_in_range(seed: int) -> int:
    return seed % SEED_MODULUS


NonEmpty = Annotated[str, Field(min_length=1)]
Stop = (
    NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=MAX_STOP_SEQUENCES)] | None
)
Seed = Annotated[Integer, AfterValidator(_seed_in_range)]
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
    temperature: float = Field(
        1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description="0 = greedy (deterministic)."
    )
    top_p: float = Field(1.0, gt=0, le=MAX_TOP_P)
    top_k: Integer = Field(0, ge=MIN_TOP_K, le=MAX_TOP_K, description="Extension: 0 = off.")
    seed: Seed | None = Field(None, description="Same seed, same request: same text.")
    stop: Stop = Field(None, description="Up to 4 sequences; the text ends before them.")
    n: Integer = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        """A streamed answer ends with a usage chunk (and every chunk has `usage: null`)."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: PositiveInteger | None = Field(None, description="Alias of max_tokens.")


class CompletionRequest(SamplingFields):
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)] = Field(
        description="One prompt (a list of one is accepted)."
    )

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# --- answers: the whole one, and the chunks of a stream (`data: {chunk}` frames) -------


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


def _unset(value: object) -> bool:
    return value is None


class ChatDelta(BaseModel):
    """What a chunk adds: the role once (the first chunk), then text; empty in the last."""

    role: Literal["assistant"] | None = Field(None, exclude_if=_unset)
    content: str | None = Field(None, exclude_if=_unset)


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]  # none in the usage chunk
    # Sent (null until the usage chunk) only when the request asked for usage.
    usage: Usage | None = None


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


class CompletionChunkChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: None = None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"  # the same as the whole answer
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None
