"""Orchestration for text models: resolve the version, call Triton once for the whole
batch, shape the answer. Routes stay thin; this holds the logic. The predict route's
other tasks have their own services (entities.py, images.py, summaries.py), which
`predictor` hands a request to; what they all share is in model_calls.py."""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import numpy as np
from starlette.requests import Request

from ..cache.service import ResultCache
from ..catalog import Catalog, ServedModel
from ..errors import InfergateError, InputInvalid, InvalidRequest, ModelNotFound
from ..observability.metrics import Metrics
from ..routing.router import Router
from ..routing.stats import RoutingStats
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.predict import PredictRequest
from ..settings import Settings
from ..triton import tensors
from ..triton.client import TritonClient
from .bodies import json_body
from .entities import EntityService
from .images import ImageService
from .model_calls import (
    CLASSIFY,
    EMBED,
    IMAGES,
    PREDICT_TASKS,
    ROUTES_BY_TASK,
    SUMMARIES,
    TOKENS,
    Answer,
    CallContext,
    ModelCalls,
    Predictor,
    TritonClock,
    top_labels,
)
from .summaries import SummaryService
from .texts import check_texts
from .token_ids import decode_token_ids

# Importable from here as they always were (api.common, tests).
__all__ = ["Answer", "CallContext", "InferenceService"]


class InferenceService(ModelCalls):
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        triton: TritonClient,
        cache: ResultCache,
        router: Router,
        stats: RoutingStats,
        metrics: Metrics,
        *,
        shadow: bool = True,
    ) -> None:
        """`shadow` False: no call is mirrored to a shadow version (batch jobs' service:
        a job's rows would flood the shadow comparison and its Triton instances)."""
        super().__init__(settings, catalog, triton, cache, router, stats, metrics)
        self.shadow = shadow
        self._shadow_slots = asyncio.Semaphore(settings.routing.max_shadow_in_flight)
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._predictors: dict[str, Predictor] = {
            CLASSIFY: self,
            TOKENS: EntityService(self),
            IMAGES: ImageService(self),
            SUMMARIES: SummaryService(self),
        }

    def predictor(self, name: str) -> Predictor:
        """The service for the named model's task on the predict route. An unknown model
        is a 404 listing every model; one of a task served elsewhere a 404 naming where."""
        model = self.catalog.get(name)
        found = self._predictors.get(model.task)
        if found is None:
            route = ROUTES_BY_TASK.get(model.task, "/v1/models for what each model does")
            raise ModelNotFound(
                f"model {name!r} is not served by the predict route: it is a {model.task} "
                f"model; use {route}",
                details={
                    "available": [
                        n
                        for n in self.catalog.names()
                        if self.catalog.models[n].task in PREDICT_TASKS
                    ]
                },
            )
        return found

    async def read(self, request: Request, model: ServedModel) -> PredictRequest:
        """A text-classification body."""
        return await json_body(request, PredictRequest)

    def _shadow(
        self, model: str, version: int, texts: list[str], labels: list[str], request_id: str
    ) -> None:
        """Send the same texts to the shadow version in the background; compare labels.
        The caller never waits: the task starts after the answer is ready, and is dropped
        when too many shadow calls are already running."""
        shadow = self.router.table[model].shadow
        if shadow is None or int(shadow.version) == version:
            return
        if random.random() * 100 >= shadow.percent:
            return
        if self._shadow_slots.locked():
            self.metrics.shadow.labels(model, shadow.version, "skipped").inc(len(texts))
            return

        async def run() -> None:
            async with self._shadow_slots:
                try:
                    result = await self.triton.infer_text(
                        model, shadow.version, texts, (tensors.LABEL,), request_id + "-shadow"
                    )
                except InfergateError:
                    self.metrics.shadow.labels(model, shadow.version, "error").inc(len(texts))
                    self.stats.record_shadow(model, 0, 0, True)
                    return
                got = [b.decode() for b in result.outputs[tensors.LABEL].reshape(-1)]
                agreed = sum(a == b for a, b in zip(got, labels, strict=True))
                self.metrics.shadow.labels(model, shadow.version, "agree").inc(agreed)
                self.metrics.shadow.labels(model, shadow.version, "disagree").inc(
                    len(texts) - agreed
                )
                self.stats.record_shadow(model, len(texts), agreed, False)

        task = asyncio.ensure_future(run())
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        body: PredictRequest,
        request_id: str,
        call: CallContext,
    ) -> Answer:
        self.catalog.get(name)  # an unknown model: 404 listing every model, as ever
        routed = self.route(name, CLASSIFY, requested_version, call)
        version = routed.decision.version
        labels = routed.card.labels
        top_k = body.top_k
        limit = min(self.settings.limits.max_top_k, len(labels))
        if top_k > limit:
            raise InputInvalid(
                f"top_k: must be at most {limit} for model {name!r}",
                details=[{"loc": ["body", "top_k"], "msg": f"max {limit}"}],
            )
        texts = check_texts(body.inputs, self.settings.limits, "inputs")
        want_scores = top_k > 1 or body.return_all_scores
        outputs = (tensors.LABEL, tensors.SCORE, tensors.NUM_TOKENS, tensors.TRUNCATED) + (
            (tensors.SCORES,) if want_scores else ()
        )
        clock = TritonClock()

        async def compute(indices: list[int]) -> list[Any]:
            sub = [texts[i] for i in indices]
            result = await self.triton.infer_text(name, str(version), sub, outputs, request_id)
            clock.seconds += result.triton_seconds
            tokens = result.outputs[tensors.NUM_TOKENS].reshape(-1).tolist()
            items = _predictions(result.outputs, len(sub), labels, top_k, body.return_all_scores)
            return [{"i": item, "t": t} for item, t in zip(items, tokens, strict=True)]

        params = {"top_k": top_k, "all_scores": body.return_all_scores}
        outcome = await self.fetch(
            routed, texts, compute, params, call, lambda values: [v["i"]["label"] for v in values]
        )
        predictions = [v["i"] for v in outcome.values]
        if self.shadow:
            self._shadow(name, version, texts, [p["label"] for p in predictions], request_id)
        answer = {
            "model": name,
            "version": str(version),
            "score_kind": routed.card.score_kind,
            "predictions": predictions,
            "usage": {"input_tokens": sum(v["t"] for v in outcome.values)},
        }
        return self.answer(routed, answer, len(texts), clock.seconds, outcome)

    async def embed(
        self,
        request: EmbeddingRequest,
        requested_version: str | None,
        request_id: str,
        cache: CallContext,
    ) -> Answer:
        routed = self.route(request.model, EMBED, requested_version, cache)
        name = routed.name  # the catalog's: it names the Triton model and its directory
        version = routed.decision.version
        dim = routed.card.embedding_dim
        if request.dimensions is not None and request.dimensions != dim:
            raise InvalidRequest(
                f"dimensions: model {name!r} produces {dim} dimensions",
                details=[{"loc": ["body", "dimensions"], "msg": f"must be {dim} or omitted"}],
                param="dimensions",
            )
        texts = check_texts(
            await self._input_texts(request, name, version), self.settings.limits, "input"
        )
        clock = TritonClock()

        async def compute(indices: list[int]) -> list[Any]:
            sub = [texts[i] for i in indices]
            outputs = (tensors.EMBEDDING, tensors.NUM_TOKENS)
            result = await self.triton.infer_text(name, str(version), sub, outputs, request_id)
            clock.seconds += result.triton_seconds
            vectors = result.outputs[tensors.EMBEDDING].astype("<f4", copy=False)
            tokens = result.outputs[tensors.NUM_TOKENS].reshape(-1).tolist()
            return [{"v": vec, "t": t} for vec, t in zip(vectors, tokens, strict=True)]

        outcome = await self.fetch(routed, texts, compute, {}, cache, lambda values: [])
        # Hits come back as lists of the float32 values: the same numbers, the same JSON.
        vectors = np.asarray([v["v"] for v in outcome.values], dtype="<f4")
        if request.encoding_format == "base64":
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(vec.tobytes()).decode("ascii"),
                }
                for i, vec in enumerate(vectors)
            ]
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": vec}
                for i, vec in enumerate(vectors)
            ]
        tokens = sum(v["t"] for v in outcome.values)
        body = {
            "object": "list",
            "data": data,
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self.answer(routed, body, len(texts), clock.seconds, outcome)

    async def _input_texts(
        self, request: EmbeddingRequest, model: str, version: int
    ) -> str | list[str]:
        """The input as text: token ids are decoded with the version's own tokenizer (in
        the repository's directory of `model`, the catalog's name)."""
        text = request.text_input()
        if text is not None:
            return text
        ids = request.token_ids() or []
        version_dir = self.settings.triton.model_repository / model / str(version)
        texts = await decode_token_ids(version_dir, model, ids, request.one_input())
        return texts[0] if request.one_input() else texts


def _predictions(
    out: dict[str, np.ndarray], n: int, labels: list[str], top_k: int, all_scores: bool
) -> list[dict[str, Any]]:
    label_out = out[tensors.LABEL].reshape(-1)
    score_out = out[tensors.SCORE].reshape(-1).tolist()
    truncated = out[tensors.TRUNCATED].reshape(-1).tolist()
    want_scores = top_k > 1 or all_scores
    predictions = []
    for i in range(n):
        label = label_out[i].decode()
        item: dict[str, Any] = {
            "label": label,
            "score": score_out[i],
            "top_k": [{"label": label, "score": score_out[i]}],
            "truncated": bool(truncated[i]),
        }
        if want_scores:
            row = out[tensors.SCORES][i]
            item["top_k"] = top_labels(row, labels, top_k)
            if all_scores:
                item["scores"] = dict(zip(labels, row.tolist(), strict=True))
        predictions.append(item)
    return predictions
