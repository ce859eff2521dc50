"""Text-generation jobs (design §5): each row is one chat completion, the row's text the
user message, through the frontend's own GenerationService, so a row's answer is what
`POST /v1/chat/completions` with the same body answers.

The job's principal is rebuilt from the row the submission wrote (subject, account, tier,
key and its limits), so every row's tokens are reserved and settled on the submitter's
token quota exactly as a synchronous call's are; a refusal there (QuotaExceeded) defers
the whole chunk to the quota's reset (frontend/jobs/failures.py), and the rows of that
attempt are not written. A row the model refuses (its prompt too long, say) becomes a
row error; anything else fails the attempt.

Rows run at most `jobs.generation_rows_in_flight` at once per worker process (the
adapter's own semaphore): the chat engine has a fixed number of sequence slots, and
online chats must find one free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from ..auth.principal import KeyLimits, Kind, Principal
from ..db.jobs import JobRow
from ..errors import BadRequest, InputInvalid
from ..schemas.chat import ChatCompletionRequest
from ..services.generation import GenerationService
from ..services.openai_shapes import chat_completion
from ..settings import Settings
from .pacing import Pacer
from .rows import Row, RowError

GENERATION: Final = "text-generation"
# The request fields a generation job's `parameters` may set: sampling and length. Not
# `stream`, `n`, tools or logprobs: a job's row holds one answer's text.
PARAMETERS: Final = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "min_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "response_format",
    }
)
CSV_COLUMNS: Final = ("content", "finish_reason", "prompt_tokens", "completion_tokens")

Prediction = dict[str, Any]


def principal_of(job: JobRow) -> Principal:
    """Whose quota the job's tokens count against: its submitter, as recorded."""
    limits = KeyLimits(**job.key_limits) if job.key_limits else None
    kind: Kind = "api_key" if job.key_id else "user"
    return Principal(
        subject=job.subject,
        kind=kind,
        role="user",
        tier=job.tier,
        owner=job.owner,
        account=job.account,
        key_id=job.key_id,
        limits=limits,
    )


def request_of(job: JobRow, text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {**job.parameters, "model": job.model, "messages": [{"role": "user", "content": text}]}
    )


class GenerationAdapter:
    def __init__(self, generation: GenerationService, settings: Settings) -> None:
        self.csv_columns: tuple[str, ...] = CSV_COLUMNS
        self.max_rows: int = settings.jobs.generation_chunk_rows
        self._generation = generation
        self._rows_at_once = asyncio.Semaphore(settings.jobs.generation_rows_in_flight)

    async def predict(
        self, job: JobRow, rows: Sequence[Row], request_id: str, in_flight: Pacer
    ) -> list[Prediction | RowError]:
        """`in_flight` bounds the dynamic-batching models' requests; generation has its
        own bound (see the module docstring)."""
        principal = principal_of(job)

        async def one(i: int, row: Row) -> Prediction | RowError:
            async with self._rows_at_once:
                try:
                    g = await self._generation.chat(
                        request_of(job, row.text),
                        principal,
                        f"{request_id}-{i}",
                        version=job.version,
                    )
                except (InputInvalid, BadRequest) as exc:
                    return RowError(row.number, "model_refused", exc.message)
                answer = await chat_completion(g)
            choice = answer.choices[0]
            usage = answer.usage
            return {
                "content": choice.message.content,
                "finish_reason": choice.finish_reason,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
            }

        tasks = [asyncio.ensure_future(one(i, row)) for i, row in enumerate(rows)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # The first failure decides the chunk (a quota refusal defers it): the other
            # rows stop, their reservations settled by their own close.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def csv_values(self, prediction: Prediction) -> list[Any]:
        usage = prediction.get("usage") or {}
        return [
            prediction.get("content"),
            prediction.get("finish_reason"),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        ]


def tokens_of(predictions: Sequence[Any]) -> tuple[int, int]:
    """The prompt and completion tokens of a chunk's answered rows (0, 0 for other tasks)."""
    prompt = completion = 0
    for p in predictions:
        usage = p.get("usage") if isinstance(p, dict) else None
        if isinstance(usage, dict):
            prompt += int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
    return prompt, completion
