"""OpenAI /v1/chat/completions and /v1/completions requests (the answers are
chat_responses.py's; messages, tools and formats chat_messages.py's).

Every field of OpenAI's reference is taken (the installed `openai` package's
CompletionCreateParams are the checklist), plus the extensions top_k, repetition_penalty,
min_tokens and ignore_eos. A field's neutral value (null, 0 penalties, logprobs false,
n 1, stop [], tools [] ...) is always accepted; a value this model cannot honour is 400
naming the field, never silently ignored. Ignored, as documented: user,
safety_identifier, prompt_cache_key/options/retention, metadata, prediction, service_tier
auto/default, store false, stream_options.include_obfuscation.

Rules that span fields raise `Refused` (400 with param): stream_options needs stream,
top_logprobs needs logprobs, min_tokens at most max_tokens (when max_tokens is sent; the
service checks it against the default otherwise), tool_choice needs tools (and a named
tool must be one of them), an assistant message needs content or tool_calls;
completions: best_of only equal to n, max_tokens 0 only with echo and logprobs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal, cast

from pydantic import AfterValidator, Field, WrapValidator, model_validator

from .chat_messages import (
    ChatMessage,
    NamedToolChoice,
    Prediction,
    ResponseFormat,
    TextFormat,
    ToolChoice,
    ToolDefinition,
    check_message,
    engine_message,
    message_chars,
    not_supported,
    refuse_function_messages,
)
from .common import WHOLE, Integer, NullIs, Refused, Strict, TokenIds

# The sampling bounds, each written once on this side. The chat model checks the same
# numbers again for callers that reach Triton directly (export/runtime/sampling.py; the
# two packages share no code, so tests/unit/test_sampling_bounds.py holds them equal).
MIN_TEMPERATURE: Final = 0  # greedy
MAX_TEMPERATURE: Final = 2
MAX_TOP_P: Final = 1  # and above 0
MIN_TOP_K: Final = 0  # off
MAX_TOP_K: Final = 1000  # this API's bound only: the model cuts at its vocabulary
MAX_STOP_SEQUENCES: Final = 4
MAX_STOP_CHARS: Final = 256  # each sequence
MAX_N: Final = 8  # and at most the model's slots (its card; the service checks)
MAX_LOGPROBS: Final = 20  # chat top_logprobs
MAX_COMPLETION_LOGPROBS: Final = 5  # the legacy completions' logprobs
MIN_PENALTY: Final = -2  # presence and frequency (OpenAI's definition)
MAX_PENALTY: Final = 2
MAX_REPETITION_PENALTY: Final = 2  # and above 0 (CTRL's definition; 1 = off)
MAX_LOGIT_BIAS: Final = 300  # entries
MIN_BIAS: Final = -100  # -100 bans the token
MAX_BIAS: Final = 100
MAX_MESSAGES: Final = 256
MAX_TOOLS: Final = 128
# Tokens a request may ask for (max_tokens, max_completion_tokens, min_tokens): Triton's
# MAX_TOKENS and MIN_TOKENS are INT32, and a larger number must be refused here, naming
# its field, never wrap or fail in the Triton client. The served model's card bounds
# max_tokens lower (the service checks it; the served OpenAPI names it).
MAX_COMPLETION_TOKENS: Final = 2**31 - 1
# Triton's SEED is INT64 and the model takes it non-negative: any integer is taken modulo
# this. (No bounds in the schema: generators compare huge integer bounds as floats, so a
# "valid" 2**63 + 191 was generated against lt=2**63.)
SEED_MODULUS: Final = 2**63


def _seed_in_range(seed: int) -> int:
    return seed % SEED_MODULUS


NonEmpty = Annotated[str, Field(min_length=1)]
StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None
CompletionTokens = Annotated[int, Field(ge=1, le=MAX_COMPLETION_TOKENS), WHOLE]
Seed = Annotated[Integer, AfterValidator(_seed_in_range)]
Penalty = Annotated[float, Field(ge=MIN_PENALTY, le=MAX_PENALTY), NullIs(0.0)]
# Keys are token ids in decimal (JSON object keys are strings): ASCII digits without
# leading zeros, so that two keys never name one id ("12" and "012"); values -100 .. 100.
LogitBias = Annotated[
    dict[
        Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,8})$")],
        Annotated[float, Field(ge=MIN_BIAS, le=MAX_BIAS)],
    ],
    Field(max_length=MAX_LOGIT_BIAS),
]
# OpenAI's metadata bounds: 16 pairs, keys up to 64 characters, values up to 512.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class StreamOptions(Strict):
    include_usage: Annotated[bool, NullIs(False)] = False
    include_obfuscation: bool | None = Field(None, description="Accepted; ignored.")


class PromptCacheOptions(Strict):
    """OpenAI's prompt-cache options: accepted, and ignored."""

    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class SamplingFields(Strict):
    """Shared by both routes. Limits on max_tokens come from the model card (400)."""

    model: str = Field(examples=["chat"])
    # The upper bound is the model's (its card); the served OpenAPI names it.
    max_tokens: CompletionTokens | None = Field(None, description="Tokens to generate at most.")
    temperature: Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE), NullIs(1.0)] = (
        Field(1.0, description="0 = greedy (deterministic).")
    )
    top_p: Annotated[float, Field(gt=0, le=MAX_TOP_P), NullIs(1.0)] = 1.0
    top_k: Annotated[int, Field(ge=MIN_TOP_K, le=MAX_TOP_K), WHOLE, NullIs(0)] = Field(
        0, description="Extension: 0 = off."
    )
    seed: Seed | None = Field(None, description="Same seed, same request: same text.")
    stop: Stop = Field(
        None, description="Up to 4 sequences of up to 256 characters; the text ends before them."
    )
    n: Annotated[int, Field(ge=1, le=MAX_N), WHOLE, NullIs(1)] = Field(
        1, description="Choices, each sampled on its own (at most the model's slots)."
    )
    stream: Annotated[bool, NullIs(False)] = False
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: Annotated[float, Field(gt=0, le=MAX_REPETITION_PENALTY), NullIs(1.0)] = (
        Field(1.0, description="Extension: CTRL's penalty over prompt and output; 1 = off.")
    )
    logit_bias: LogitBias | None = Field(
        None, description="Token id (decimal, no leading zeros) -> bias; -100 bans it."
    )
    min_tokens: Annotated[int, Field(ge=0, le=MAX_COMPLETION_TOKENS), WHOLE, NullIs(0)] = Field(
        0,
        description="Extension: no stop (EOS or stop sequence) before this many tokens "
        "(at most max_tokens, or its default).",
    )
    ignore_eos: Annotated[bool, NullIs(False)] = Field(
        False, description="Extension: the end-of-sequence token does not end the text."
    )
    user: str | None = Field(None, max_length=256)

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        """A streamed answer ends with a usage chunk (and every chunk has `usage: null`)."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        """(token id, bias), by id; () when none."""
        return tuple(sorted((int(k), float(v)) for k, v in (self.logit_bias or {}).items()))

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @model_validator(mode="after")
    def _sampling_rules(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise Refused("stream_options", "only allowed when stream is true")
        limit = self.requested_max_tokens()
        if limit is not None and self.min_tokens > limit:
            raise Refused("min_tokens", f"must be at most the tokens asked for ({limit})")
        return self


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[
        list[ChatMessage],
        Field(min_length=1, max_length=MAX_MESSAGES),
        WrapValidator(refuse_function_messages),
    ]
    max_completion_tokens: CompletionTokens | None = Field(None, description="Alias of max_tokens.")
    logprobs: Annotated[bool, NullIs(False)] = Field(
        False, description="Each output token's log probability."
    )
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = Field(
        None, description="Alternatives per token (needs logprobs true)."
    )
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = Field(None, description='Default "auto" with tools.')
    parallel_tool_calls: Annotated[bool, NullIs(True)] = True
    # OpenAI's options this model has no use for: the neutral value passes, others are 400.
    functions: Annotated[
        Annotated[list[dict[str, Any]], Field(max_length=0)] | None,
        not_supported("functions is deprecated: send tools"),
    ] = None
    function_call: Annotated[
        Literal["none", "auto"] | None,
        not_supported("function_call is deprecated: send tool_choice"),
    ] = None
    audio: Annotated[None, not_supported("this model answers in text only")] = None
    modalities: Annotated[
        list[Literal["text"]] | None, not_supported('this model answers in text only: ["text"]')
    ] = None
    reasoning_effort: Annotated[None, not_supported("this model does not reason")] = None
    verbosity: Annotated[
        Literal["medium"] | None, not_supported('only "medium" (the default) is supported')
    ] = None
    web_search_options: Annotated[None, not_supported("this server does not search the web")] = None
    moderation: Annotated[None, not_supported("this server runs no moderation model")] = None
    store: Annotated[
        Literal[False] | None, not_supported("this server keeps no completions: send false")
    ] = None
    service_tier: Annotated[
        Literal["auto", "default"] | None, not_supported('only "auto" or "default"')
    ] = None
    # Accepted and ignored (hints for OpenAI's own caching, routing and storage).
    metadata: Metadata | None = None
    prediction: Prediction | None = None
    prompt_cache_key: str | None = Field(None, max_length=1024)
    prompt_cache_options: PromptCacheOptions | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = Field(None, max_length=256)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens

    @model_validator(mode="after")
    def _chat_rules(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise Refused("top_logprobs", "needs logprobs true")
        for i, message in enumerate(self.messages):
            check_message(i, message)
        names = [tool.function.name for tool in self.tools or ()]
        for j, name in enumerate(names):
            if name in names[:j]:
                raise Refused(f"tools.{j}.function.name", f"{name!r} is defined twice")
        choice = self.tool_choice
        if not names and (choice == "required" or isinstance(choice, NamedToolChoice)):
            raise Refused("tool_choice", "needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise Refused("tool_choice", f"names {choice.function.name!r}, which is not in tools")
        return self

    def engine_messages(self) -> list[dict[str, Any]]:
        """The messages as the chat model takes them (chat_messages.engine_message)."""
        return [engine_message(message) for message in self.messages]

    def prompt_chars(self) -> int:
        """Every character the prompt is built from: the messages' text and tool calls, and
        the tools' definitions (the template writes them into the prompt)."""
        return sum(message_chars(m) for m in self.messages) + len(self.tools_json() or "")

    def logprobs_count(self) -> int | None:
        """Alternatives per token when logprobs are asked for (0: the token's own only)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def response_format_json(self) -> str | None:
        """OpenAI's response_format as JSON; None for none or {"type": "text"} (no
        constraint)."""
        if self.response_format is None or isinstance(self.response_format, TextFormat):
            return None
        return json.dumps(self.response_format.model_dump(by_alias=True, exclude_none=True))

    def tools_json(self) -> str | None:
        if not self.tools:
            return None
        return json.dumps([tool.model_dump(exclude_none=True) for tool in self.tools])

    def tool_choice_json(self) -> str | None:
        """The tool choice as JSON ("auto" when tools come without one); None without
        tools."""
        if not self.tools:
            return None
        choice = self.tool_choice or "auto"
        return json.dumps(choice if isinstance(choice, str) else choice.model_dump())


class CompletionRequest(SamplingFields):
    prompt: (
        NonEmpty
        | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=1)]
    ) = Field(description="One prompt: text or token ids (a list of one is accepted).")
    # 0 only to score the prompt (with echo and logprobs): nothing is generated.
    max_tokens: Annotated[int, Field(ge=0, le=MAX_COMPLETION_TOKENS), WHOLE] | None = Field(
        None,
        description="Tokens to generate at most (0: score the prompt, with echo and logprobs).",
    )
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_LOGPROBS), WHOLE] | None = Field(
        None, description="Log probabilities of each token and this many alternatives."
    )
    echo: Annotated[bool, NullIs(False)] = Field(False, description="The prompt comes first.")
    best_of: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None, description="Only null or equal to n (every choice is returned)."
    )
    suffix: Annotated[
        Annotated[str, Field(max_length=0)] | None,
        not_supported("this model does not insert text: send null or an empty suffix"),
    ] = None

    @model_validator(mode="after")
    def _completion_rules(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise Refused("best_of", "is not supported (other than equal to n)")
        if self.max_tokens == 0 and not (self.echo and self.logprobs is not None):
            raise Refused("max_tokens", "0 only with echo and logprobs (scoring the prompt)")
        return self

    def prompt_input(self) -> str | list[int]:
        """The one prompt: its text, or its token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        first = prompt[0]
        if isinstance(first, int):
            return cast(list[int], list(prompt))  # the ids themselves
        return first

    def prompt_text(self) -> str | None:
        """The prompt's text; None for token ids."""
        prompt = self.prompt_input()
        return prompt if isinstance(prompt, str) else None
