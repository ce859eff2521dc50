"""Text generation beneath the OpenAI-compatible routes.

`chat()` and `complete()` do everything that can still become an HTTP error: the prompt's
size (checked here, before the model's single instance spends time tokenizing it), the
model and its token limit (the sampling bounds are the request schema's), the gRPC
stream, the model's admission (bad prompt → 400, full → 503), the token reservation
(429). After them, `updates()` yields the model's responses and `close()` (idempotent,
shielded) cancels the stream if it is still open and settles the tokens actually used —
on success, error or client disconnect alike. The OpenAI shapes are `openai_shapes.py`'s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..auth.principal import Principal
from ..catalog import Catalog
from ..context import RequestContext
from ..errors import BadRequest, InfergateError, PromptTooLong
from ..observability.metrics import Metrics
from ..ratelimit.quota import Reservation, TokenQuota
from ..schemas.chat import ChatCompletionRequest, CompletionRequest, SamplingFields, Usage
from ..settings import GenerationSettings
from ..triton.client import GenerationParams, GenerationStep, GenerationStream, TritonClient

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
    completion_tokens: int = 0
    finish_reason: str = ""
    # The request's context, told the token counts as they grow (the usage ledger reads
    # them when the request ends, after a stream's last frame, or a client that left).
    usage_to: RequestContext | None = None
    _closed: bool = False
    _outcome: str = field(default="disconnected")

    @property
    def version(self) -> str:
        return self.stream.version

    def report_to(self, ctx: RequestContext) -> None:
        """Keep `ctx`'s token counts equal to this generation's, from now to its end."""
        self.usage_to = ctx
        ctx.prompt_tokens, ctx.completion_tokens = self.prompt_tokens, self.completion_tokens

    async def updates(self) -> AsyncIterator[GenerationStep]:
        """Token responses then the final one; raises InfergateError mid-stream."""
        metrics, model = self.metrics, self.model
        last = None
        try:
            while True:
                update = await self.stream.next()
                if update is None:
                    return
                now = time.monotonic()
                if update.completion_tokens > self.completion_tokens:
                    new = update.completion_tokens - self.completion_tokens
                    metrics.generated_tokens.labels(model, "completion").inc(new)
                    if last is None:
                        metrics.ttft.labels(model).observe(now - self.started)
                    else:
                        metrics.inter_token.labels(model).observe((now - last) / new)
                    last = now
                    self.completion_tokens = update.completion_tokens
                    if self.usage_to is not None:
                        self.usage_to.completion_tokens = update.completion_tokens
                if update.finish_reason:
                    self.finish_reason = update.finish_reason
                    self._outcome = update.finish_reason
                yield update
                if update.finish_reason:
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
        self, body: ChatCompletionRequest, principal: Principal, request_id: str
    ) -> Generation:
        self._check_prompt_chars(sum(len(m.content) for m in body.messages))
        requested = body.max_completion_tokens or body.max_tokens
        return await self._start(
            body,
            max_tokens=requested or self.settings.default_chat_max_tokens,
            messages=[m.model_dump() for m in body.messages],
            principal=principal,
            request_id=request_id,
            id_prefix="chatcmpl",
        )

    async def complete(
        self, body: CompletionRequest, principal: Principal, request_id: str
    ) -> Generation:
        prompt = body.prompt_text()  # one, non-empty: the schema says so
        self._check_prompt_chars(len(prompt))
        return await self._start(
            body,
            max_tokens=body.max_tokens or self.settings.default_completion_max_tokens,
            prompt=prompt,
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
        body: SamplingFields,
        *,
        max_tokens: int,
        prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
        principal: Principal,
        request_id: str,
        id_prefix: str,
    ) -> Generation:
        started = time.monotonic()
        model = self.catalog.get(body.model, task=TASK)
        card = model.card(model.default_version)
        limit = card.max_completion_tokens or max_tokens
        if max_tokens > limit:  # at least 1: the schema and the settings say so
            raise BadRequest(
                f"max_tokens is {max_tokens}; model {body.model!r} generates 1 to {limit} "
                "tokens per request",
                details={"max_completion_tokens": limit},
            )
        params = GenerationParams(  # within their bounds: the schema checked them
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            stop=body.stop_sequences(),
        )
        stream = self.triton.generate(
            model.name,
            str(model.default_version),
            params,
            prompt=prompt,
            messages=messages,
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
        )
        try:
            admitted = await stream.next(self.settings.admission_timeout_s)
            if admitted is None:  # cannot happen: the stream ends only after a final
                raise BadRequest("the model refused the request")
            generation.prompt_tokens = admitted.prompt_tokens
            self.metrics.generated_tokens.labels(model.name, "prompt").inc(admitted.prompt_tokens)
            if self.quota is not None:
                # Reserved once the prompt's length is known: the most this call can use.
                generation.reservation = await self.quota.reserve(
                    principal, admitted.prompt_tokens + max_tokens
                )
                generation.quota = self.quota
        except BaseException as exc:
            generation._outcome = "refused" if isinstance(exc, InfergateError) else "error"
            await generation.close()
            raise
        return generation
