"""Text generation beneath the OpenAI-compatible routes.

`start()` does everything that can still become an HTTP error: the prompt's size (checked
here, before the model's single instance spends time tokenizing it), the model and limits,
the gRPC stream, the model's admission (bad prompt → 400, full → 503), the token
reservation (429). After it, `updates()` yields the model's responses and `close()`
(idempotent, shielded) cancels the stream if it is still open and settles the tokens
actually used — on success, error or client disconnect alike.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..auth.principal import Principal
from ..errors import BadRequest, InfergateError, PromptTooLong
from ..observability.metrics import Metrics
from ..ratelimit.quota import Reservation, TokenQuota
from ..schemas.chat import ChatCompletionRequest, CompletionRequest, SamplingFields
from ..settings import GenerationSettings
from ..triton.client import TritonClient
from ..triton.generate import GenerationParams, GenerationStream, Update, request_inputs
from .catalog import Catalog

TASK = "text-generation"


@dataclass
class Generation:
    id: str
    model: str
    created: int
    prompt_tokens: int
    max_tokens: int
    stream: GenerationStream
    started: float
    metrics: Metrics
    quota: TokenQuota | None = None
    reservation: Reservation | None = None
    completion_tokens: int = 0
    finish_reason: str = ""
    _closed: bool = False
    _outcome: str = field(default="disconnected")

    async def updates(self) -> AsyncIterator[Update]:
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

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


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
        messages = json.dumps([m.model_dump() for m in body.messages])
        requested = body.max_completion_tokens or body.max_tokens
        return await self._start(
            body,
            requested or self.settings.default_chat_max_tokens,
            None,
            messages,
            principal,
            request_id,
            "chatcmpl",
        )

    async def complete(
        self, body: CompletionRequest, principal: Principal, request_id: str
    ) -> Generation:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise BadRequest("prompt must be one string (a list of exactly one is accepted)")
        if not prompts[0]:
            raise BadRequest("prompt is empty")
        self._check_prompt_chars(len(prompts[0]))
        max_tokens = body.max_tokens or self.settings.default_completion_max_tokens
        return await self._start(body, max_tokens, prompts[0], None, principal, request_id, "cmpl")

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
        max_tokens: int,
        prompt: str | None,
        messages: str | None,
        principal: Principal,
        request_id: str,
        id_prefix: str,
    ) -> Generation:
        started = time.monotonic()
        model = self.catalog.get(body.model, task=TASK)
        card = model.card(model.default_version)
        limit = int(card.get("max_completion_tokens", 0)) or max_tokens
        if not 1 <= max_tokens <= limit:
            raise BadRequest(
                f"max_tokens is {max_tokens}; model {body.model!r} generates 1 to {limit} "
                "tokens per request",
                details={"max_completion_tokens": limit},
            )
        params = GenerationParams(  # stop's count and emptiness: the schema checks them
            max_tokens,
            body.temperature,
            body.top_p,
            body.top_k,
            None if body.seed is None else body.seed % 2**63,  # Triton's SEED is INT64
            body.stop_sequences(),
        )
        version = str(model.default_version)
        stream = self.triton.generate(
            model.name,
            version,
            request_inputs(prompt, messages, params),
            request_id,
            self.settings.timeout_s,
            self.settings.idle_timeout_s,
        )
        self.metrics.active_generations.labels(model.name).inc()
        generation = Generation(
            id=f"{id_prefix}-{request_id or uuid.uuid4().hex}",
            model=model.name,
            created=int(time.time()),
            prompt_tokens=0,
            max_tokens=max_tokens,
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
