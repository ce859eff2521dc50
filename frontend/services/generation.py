"""Text generation beneath the OpenAI-compatible routes.

`chat()` and `complete()` do everything that can still become an HTTP error: the prompt's
size (checked here, before the model's single instance spends time tokenizing it), the
model and its token limit, min_tokens against the max_tokens in effect (the default's,
when the request sends none; the other sampling bounds are the request schema's), the gRPC
stream, the model's admission (bad prompt → 400, full → 503), the token reservation
(429: the prompt and `n` times max_tokens, the most the call can use). After them,
`updates()` yields the model's responses of every choice, interleaved, and `close()`
(idempotent, shielded) cancels the stream if it is still open and settles the tokens
actually used (the prompt once, every choice's completion) — on success, error or client
disconnect alike. The OpenAI shapes are `openai_shapes.py`'s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..auth.principal import Principal
from ..catalog import Catalog
from ..context import RequestContext
from ..errors import BadRequest, InfergateError, PromptTooLong, UpstreamError, VersionNotFound
from ..observability.metrics import Metrics
from ..ratelimit.quota import Reservation, TokenQuota
from ..schemas.chat import (
    MAX_COMPLETION_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
)
from ..schemas.chat_responses import Usage
from ..settings import GenerationSettings
from ..triton.client import (
    GenerationParams,
    GenerationStep,
    GenerationStream,
    LogprobEntry,
    TritonClient,
)
from .openai_logprobs import entries_text

TASK = "text-generation"


@dataclass
class Generation:
    id: str
    model: str
    created: int
    prompt_tokens: int
    stream: GenerationStream
    started: float
    metrics: Metrics
    quota: TokenQuota | None = None
    reservation: Reservation | None = None
    n: int = 1
    # What the answer shows besides the text: the tokens' logprob entries, and (echo,
    # completions) the prompt in front of each choice's text with the prompt's entries.
    show_logprobs: bool = False
    echo: str | None = None
    prompt_logprobs: list[LogprobEntry] | None = None
    choice_tokens: list[int] = field(default_factory=list)  # completion tokens per choice
    finish_reasons: list[str] = field(default_factory=list)  # "" until the choice ends
    # The request's context, told the token counts as they grow (the usage ledger reads
    # them when the request ends, after a stream's last frame, or a client that left).
    usage_to: RequestContext | None = None
    _closed: bool = False
    _outcome: str = field(default="disconnected")

    def __post_init__(self) -> None:
        self.choice_tokens = self.choice_tokens or [0] * self.n
        self.finish_reasons = self.finish_reasons or [""] * self.n

    @property
    def version(self) -> str:
        return self.stream.version

    @property
    def completion_tokens(self) -> int:
        return sum(self.choice_tokens)

    def report_to(self, ctx: RequestContext) -> None:
        """Keep `ctx`'s token counts equal to this generation's, from now to its end."""
        self.usage_to = ctx
        ctx.prompt_tokens, ctx.completion_tokens = self.prompt_tokens, self.completion_tokens

    async def updates(self) -> AsyncIterator[GenerationStep]:
        """Every choice's token responses and final ones, as the model interleaves them
        (`step.index` names the choice); raises InfergateError mid-stream."""
        metrics, model = self.metrics, self.model
        first = True
        last: dict[int, float] = {}  # per choice: the time of its latest token
        try:
            while True:
                update = await self.stream.next()
                if update is None:
                    return
                now, i = time.monotonic(), update.index
                if not 0 <= i < self.n:
                    raise UpstreamError(f"model {model!r} answered for choice {i} of {self.n}")
                if update.completion_tokens > self.choice_tokens[i]:
                    new = update.completion_tokens - self.choice_tokens[i]
                    metrics.generated_tokens.labels(model, "completion").inc(new)
                    if first:
                        metrics.ttft.labels(model).observe(now - self.started)
                        first = False
                    elif i in last:
                        metrics.inter_token.labels(model).observe((now - last[i]) / new)
                    last[i] = now
                    self.choice_tokens[i] = update.completion_tokens
                    if self.usage_to is not None:
                        self.usage_to.completion_tokens = self.completion_tokens
                if update.finish_reason:
                    self.finish_reasons[i] = update.finish_reason
                    self._outcome = update.finish_reason
                yield update
                if self.stream.finished:
                    return
        except InfergateError:
            self._outcome = "error"
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.stream.finished:
            self.stream.cancel()  # the model sees the cancellation at its next step
        self.metrics.generations.labels(self.model, self._outcome).inc()
        self.metrics.active_generations.labels(self.model).dec()
        if self.quota is not None and self.reservation is not None:
            self.reservation.used = self.prompt_tokens + self.completion_tokens
            await asyncio.shield(self.quota.settle(self.reservation))

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


@dataclass(frozen=True)
class _Shown:
    """What a route's answer shows besides the generated text (see Generation)."""

    logprobs: bool = False
    echo: bool = False
    echo_text: str | None = None  # the prompt as sent; None: joined from its entries


class GenerationService:
    def __init__(
        self,
        catalog: Catalog,
        triton: TritonClient,
        quota: TokenQuota | None,
        settings: GenerationSettings,
        metrics: Metrics,
    ) -> None:
        self.catalog = catalog
        self.triton = triton
        self.quota = quota
        self.settings = settings
        self.metrics = metrics

    async def chat(
        self,
        body: ChatCompletionRequest,
        principal: Principal,
        request_id: str,
        *,
        version: str | None = None,
    ) -> Generation:
        """`version`: a batch job's recorded version (None: the model's default)."""
        self._check_prompt_chars(body.prompt_chars())
        requested = body.requested_max_tokens()  # max_completion_tokens, else max_tokens
        alias = body.max_completion_tokens
        logprobs = body.logprobs_count()
        params = _params(
            body,
            self.settings.default_chat_max_tokens if requested is None else requested,
            logprobs=logprobs,
            response_format=body.response_format_json(),
            tools=body.tools_json(),
            tool_choice=body.tool_choice_json(),
            parallel_tool_calls=body.parallel_tool_calls,
        )
        return await self._start(
            body.model,
            params,
            _Shown(logprobs=logprobs is not None),
            messages=body.engine_messages(),
            max_tokens_param="max_tokens" if alias is None else "max_completion_tokens",
            principal=principal,
            request_id=request_id,
            id_prefix="chatcmpl",
            version=version,
        )

    async def complete(
        self, body: CompletionRequest, principal: Principal, request_id: str
    ) -> Generation:
        prompt = body.prompt_input()  # one, non-empty: the schema says so
        text = prompt if isinstance(prompt, str) else None
        # Token ids are not tokenized (what the character cap spares the model); the
        # model's own prompt-token limit bounds them.
        self._check_prompt_chars(0 if text is None else len(text))
        echo, logprobs = body.echo, body.logprobs
        # Echo of a token-id prompt needs its text, which only the prompt's logprob entries
        # carry (their tokens' bytes): asked for with no alternatives even when the answer
        # does not show them.
        prompt_logprobs = None
        if echo and (logprobs is not None or text is None):
            prompt_logprobs = logprobs or 0
        requested = body.requested_max_tokens()  # 0 (score the prompt): echo and logprobs
        params = _params(
            body,
            self.settings.default_completion_max_tokens if requested is None else requested,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )
        return await self._start(
            body.model,
            params,
            _Shown(logprobs=logprobs is not None, echo=echo, echo_text=text),
            prompt=text,
            prompt_ids=None if isinstance(prompt, str) else prompt,
            principal=principal,
            request_id=request_id,
            id_prefix="cmpl",
        )

    def _check_prompt_chars(self, chars: int) -> None:
        limit = self.settings.max_prompt_chars
        if chars > limit:
            raise PromptTooLong(
                f"the prompt has {chars} characters; the limit is {limit}",
                details={"prompt_chars": chars, "limit_chars": limit},
            )

    async def _start(
        self,
        name: str,
        params: GenerationParams,
        shown: _Shown,
        *,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        prompt_ids: list[int] | None = None,
        principal: Principal,
        request_id: str,
        id_prefix: str,
        max_tokens_param: str = "max_tokens",
        version: str | None = None,
    ) -> Generation:
        started = time.monotonic()
        model = self.catalog.get(name, task=TASK)
        number = int(version) if version else model.default_version
        if number not in model.cards:  # a job's version retired since it was submitted
            raise VersionNotFound(f"model {name!r} has no version {number}")
        card = model.card(number)
        max_tokens = params.max_tokens
        # A card without a bound is bounded by what Triton's INT32 MAX_TOKENS holds.
        limit = min(card.max_completion_tokens or MAX_COMPLETION_TOKENS, MAX_COMPLETION_TOKENS)
        if max_tokens > limit:  # at least 1 unless scoring: the schema and settings say so
            raise BadRequest(
                f"max_tokens is {max_tokens}; model {name!r} generates 1 to {limit} "
                "tokens per request",
                details={"max_completion_tokens": limit},
                param=max_tokens_param,
            )
        if params.min_tokens > max_tokens:  # the schema checked a max_tokens sent, not the default
            raise BadRequest(
                f"min_tokens: {params.min_tokens} is more than the {max_tokens} tokens this "
                "request generates at most (max_tokens, or its default)",
                details={"max_tokens": max_tokens},
                param="min_tokens",
            )
        if card.slots is not None and params.n > card.slots:
            raise BadRequest(
                f"n is {params.n}; model {name!r} generates at most {card.slots} choices at once",
                details={"slots": card.slots},
                param="n",
            )
        stream = self.triton.generate(
            model.name,
            str(number),
            params,
            prompt=prompt,
            messages=messages,
            prompt_ids=prompt_ids,
            request_id=request_id,
            timeout_s=self.settings.timeout_s,
            idle_timeout_s=self.settings.idle_timeout_s,
        )
        self.metrics.active_generations.labels(model.name).inc()
        generation = Generation(
            id=f"{id_prefix}-{request_id or uuid.uuid4().hex}",
            model=model.name,
            created=int(time.time()),
            prompt_tokens=0,
            stream=stream,
            started=started,
            metrics=self.metrics,
            n=params.n,
            show_logprobs=shown.logprobs,
        )
        try:
            # With the prompt's logprobs the model admits a request once it has read the
            # prompt (the admission carries them), after any wait for a slot: then the
            # stream's idle bound applies instead of the admission deadline.
            scoring = params.prompt_logprobs is not None
            admitted = await stream.next(None if scoring else self.settings.admission_timeout_s)
            if admitted is None:  # cannot happen: the stream ends only after a final
                raise BadRequest("the model refused the request")
            generation.prompt_tokens = admitted.prompt_tokens
            if shown.echo:
                entries = admitted.prompt_logprobs or []
                echo = shown.echo_text
                generation.echo = entries_text(entries) if echo is None else echo
                generation.prompt_logprobs = entries if shown.logprobs else None
            self.metrics.generated_tokens.labels(model.name, "prompt").inc(admitted.prompt_tokens)
            if self.quota is not None:
                # Reserved once the prompt's length is known: the most this call can use.
                generation.reservation = await self.quota.reserve(
                    principal, admitted.prompt_tokens + params.n * max_tokens
                )
                generation.quota = self.quota
        except BaseException as exc:
            generation._outcome = "refused" if isinstance(exc, InfergateError) else "error"
            await generation.close()
            raise
        return generation


def _params(body: SamplingFields, max_tokens: int, **route: Any) -> GenerationParams:
    """The sampling both routes share (within their bounds: the schema checked them),
    and the route's own options."""
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        stop=body.stop_sequences(),
        n=body.n,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        logit_bias=body.logit_bias_pairs(),
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        **route,
    )
