"""A job's rows through the frontend's own services, one adapter per task (design §5), so
a job's predictions are the synchronous API's by construction.

Each adapter calls the service with the version recorded at submission (routing was
applied then), the cache bypassed (a job's rows would flood it) and the request id
`<job>-<chunk>`. A chunk goes in sub-batches of `jobs.triton_batch_rows` texts (capped
by the task's own item limit and by `limits.max_batch_chars`), each sent while holding
the worker's in-flight semaphore: that bound, not Triton's priority (which does not
pre-empt an executing batch), keeps an instance free for online traffic.

A refusal that names items (a service's InputInvalid whose details say
`loc: ["body", "inputs" | "input", i]`, or Triton's `TEXT[j]: ...`) makes those rows
`RowError(model_refused)` and the rest are sent again; each round drops at least one
row, so it ends. Any other InputInvalid is the job's fault and propagates (fatal).

Text generation has its own adapter (frontend/jobs/generation_adapter.py: one chat
completion per row), present when `adapters_for` is given the generation service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..db.jobs import JobRow
from ..errors import InputInvalid
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.entities import EntitiesRequest
from ..schemas.predict import PredictRequest
from ..schemas.summaries import SummarizeRequest
from ..services.generation import GenerationService
from ..services.inference import InferenceService
from ..services.model_calls import CLASSIFY, EMBED, SUMMARIES, TOKENS, CallContext
from ..services.refusals import refused_text
from ..settings import Settings
from .generation_adapter import GENERATION, GenerationAdapter
from .pacing import Pacer
from .rows import Row, RowError

Prediction = dict[str, Any]
# One sub-batch's texts -> one prediction per text (raises the service's errors).
Call = Callable[[list[str]], Awaitable[list[Prediction]]]


class TaskAdapter(Protocol):
    """What the runner needs of a task: the chunk size it takes, its predictions for a
    chunk's rows (one per row, aligned, a RowError for a refused row), its CSV columns."""

    csv_columns: tuple[str, ...]
    max_rows: int  # rows per chunk at most (planning: min(jobs.chunk_rows, this))

    async def predict(
        self, job: JobRow, rows: Sequence[Row], request_id: str, in_flight: Pacer
    ) -> list[Prediction | RowError]: ...

    def csv_values(self, prediction: Prediction) -> list[Any]: ...


def refused_items(exc: InputInvalid, texts: Sequence[str]) -> dict[int, str] | None:
    """{index in `texts`: reason} when the refusal names items only; None otherwise. A
    refused text refuses every row holding the same text (the model is deterministic)."""
    named: dict[int, str] = {}
    details = exc.details if isinstance(exc.details, list) else []
    for detail in details:
        loc = detail.get("loc") if isinstance(detail, dict) else None
        if not (
            isinstance(loc, list)
            and len(loc) == 3
            and loc[:2] in (["body", "inputs"], ["body", "input"])
            and isinstance(loc[2], int)
            and 0 <= loc[2] < len(texts)
        ):
            return None
        named[loc[2]] = str(detail.get("msg") or exc.message)
    if not details:
        triton = refused_text(exc, list(texts))  # classification passes Triton's on as is
        if triton is None:
            return None
        named[texts.index(triton.text)] = triton.reason or exc.message
    refused = {texts[i]: reason for i, reason in named.items()}
    return {i: refused[text] for i, text in enumerate(texts) if text in refused}


def sub_batches(rows: Sequence[Row], batch_rows: int, max_chars: int) -> list[list[Row]]:
    """Consecutive runs of at most `batch_rows` rows and `max_chars` characters (a row is
    at most limits.max_input_chars, itself at most the batch's: one row always fits)."""
    batches: list[list[Row]] = []
    current: list[Row] = []
    chars = 0
    for row in rows:
        if current and (len(current) == batch_rows or chars + len(row.text) > max_chars):
            batches.append(current)
            current, chars = [], 0
        current.append(row)
        chars += len(row.text)
    if current:
        batches.append(current)
    return batches


async def _one_batch(
    rows: list[Row], call: Call, in_flight: Pacer, full: bool
) -> list[Prediction | RowError]:
    out: dict[int, Prediction | RowError] = {}
    left = list(range(len(rows)))
    while left:
        texts = [rows[i].text for i in left]
        try:
            async with in_flight.slot(sum(map(len, texts)), full=full and len(left) == len(rows)):
                predictions = await call(texts)
        except InputInvalid as exc:
            refused = refused_items(exc, texts)
            if not refused:
                raise
            for j, reason in refused.items():
                out[left[j]] = RowError(rows[left[j]].number, "model_refused", reason)
            left = [i for j, i in enumerate(left) if j not in refused]
            continue
        if len(predictions) != len(texts):
            raise RuntimeError(f"{len(predictions)} predictions for {len(texts)} texts")
        out.update(zip(left, predictions, strict=True))
        left = []
    return [out[i] for i in range(len(rows))]


async def predict_in_batches(
    rows: Sequence[Row],
    call: Call,
    *,
    batch_rows: int,
    max_chars: int,
    in_flight: Pacer,
) -> list[Prediction | RowError]:
    """Every row's prediction (or refusal), in row order. Sub-batches of consecutive rows
    run concurrently, as many at once as `in_flight` lets through; each is cut when it
    starts, at the size the pacer gives (`batch_rows`, or fewer rows while online traffic
    is there: a short batch holds an instance for less time)."""
    out: list[Prediction | RowError | None] = [None] * len(rows)
    position = 0

    def take() -> tuple[int, list[Row]] | None:
        nonlocal position
        if position >= len(rows):
            return None
        size = in_flight.batch_rows(batch_rows)
        batch = sub_batches(rows[position : position + size], size, max_chars)[0]
        start, position = position, position + len(batch)
        return start, batch

    async def worker() -> None:
        while (taken := take()) is not None:
            start, batch = taken
            done = await _one_batch(batch, call, in_flight, full=len(batch) == batch_rows)
            out[start : start + len(batch)] = done

    needed = -(-len(rows) // max(batch_rows, 1))
    tasks = [asyncio.ensure_future(worker()) for _ in range(min(in_flight.limit, needed))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # The first failure decides the chunk: the other sub-batches stop (gather alone
        # would leave them running, holding in-flight slots for nothing).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    assert all(item is not None for item in out)
    return [item for item in out if item is not None]


class ServiceAdapter:
    """A task served by the frontend's services: `request` builds the task's call."""

    def __init__(
        self,
        settings: Settings,
        csv_columns: tuple[str, ...],
        max_rows: int,
        request: Callable[[JobRow, str], Call],
    ) -> None:
        self.csv_columns, self.max_rows = csv_columns, max_rows
        self._settings, self._request = settings, request

    async def predict(
        self, job: JobRow, rows: Sequence[Row], request_id: str, in_flight: Pacer
    ) -> list[Prediction | RowError]:
        return await predict_in_batches(
            rows,
            self._request(job, request_id),
            batch_rows=min(self._settings.jobs.triton_batch_rows, self.max_rows),
            max_chars=self._settings.limits.max_batch_chars,
            in_flight=in_flight,
        )

    def csv_values(self, prediction: Prediction) -> list[Any]:
        return [prediction.get(name) for name in self.csv_columns]


def _call_context(job: JobRow) -> CallContext:
    return CallContext(job.account, bypass=True, subject=job.subject)


def adapters_for(
    inference: InferenceService,
    settings: Settings,
    generation: GenerationService | None = None,
) -> dict[str, TaskAdapter]:
    """The adapters by task. `inference` should be the batch one (its Triton client sends
    the batch priority, `shadow=False`); `generation`, over the same client, adds text
    generation."""
    limits = settings.limits

    def predict_route(schema: type[Any]) -> Callable[[JobRow, str], Call]:
        def request(job: JobRow, request_id: str) -> Call:
            async def call(texts: list[str]) -> list[Prediction]:
                body = schema.model_validate({**job.parameters, "inputs": texts})
                predictor = inference.predictor(job.model)
                answer = await predictor.predict(
                    job.model, job.version, body, request_id, _call_context(job)
                )
                return list(answer.body["predictions"])

            return call

        return request

    def embed(job: JobRow, request_id: str) -> Call:
        async def call(texts: list[str]) -> list[Prediction]:
            body = EmbeddingRequest.model_validate(
                {**job.parameters, "model": job.model, "input": texts}
            )
            answer = await inference.embed(body, job.version, request_id, _call_context(job))
            return [{"embedding": item["embedding"]} for item in answer.body["data"]]

        return call

    classify = ("label", "score", "top_k", "truncated")
    summary = ("summary", "method", "source_chars", "source_sentences", "chunks", "sentences")
    return {
        CLASSIFY: ServiceAdapter(
            settings, classify, limits.max_batch_items, predict_route(PredictRequest)
        ),
        TOKENS: ServiceAdapter(
            settings,
            ("entities", "truncated"),
            limits.max_entity_items,
            predict_route(EntitiesRequest),
        ),
        SUMMARIES: ServiceAdapter(
            settings, summary, limits.max_summary_items, predict_route(SummarizeRequest)
        ),
        EMBED: ServiceAdapter(settings, ("embedding",), limits.max_batch_items, embed),
        **({GENERATION: GenerationAdapter(generation, settings)} if generation else {}),
    }
