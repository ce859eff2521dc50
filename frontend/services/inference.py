"""Orchestration for text models: resolve the version, call Triton once for the whole
batch, shape the answer. Routes stay thin; this holds the logic."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cache.service import ResultCache
from ..catalog import Catalog, ServedModel
from ..errors import InfergateError, InputInvalid, InvalidRequest, ModelNotFound
from ..observability.metrics import Metrics
from ..routing.router import Decision, Router
from ..routing.stats import RoutingStats
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.predict import PredictRequest
from ..settings import Settings
from ..triton import tensors
from ..triton.client import TritonClient
from .texts import check_texts
from .token_ids import decode_token_ids

CLASSIFY, EMBED = "text-classification", "feature-extraction"
# Where each task is served: named when a route is asked for another task's model.
_ROUTES_BY_TASK = {
    CLASSIFY: "/v1/models/{model}/predict",
    EMBED: "/v1/embeddings",
    "text-generation": "/v1/chat/completions or /v1/completions",
}


@dataclass(frozen=True, slots=True)
class CallContext:
    account: str  # whose cache entries (tenant scope)
    bypass: bool  # the caller sent Cache-Control: no-cache / no-store
    subject: str = ""  # who routing assigns (sticky rollout / experiment buckets)


@dataclass(kw_only=True)
class Answer:
    body: dict[str, Any]
    model: str
    version: str
    items: int
    triton_seconds: float
    cache_hits: int = 0
    cacheable: bool = False
    ttl_s: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Deprecation, Sunset, Link


class InferenceService:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        triton: TritonClient,
        cache: ResultCache,
        router: Router,
        stats: RoutingStats,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton
        self.cache = cache
        self.router = router
        self.stats = stats
        self.metrics = metrics
        self._shadow_slots = asyncio.Semaphore(settings.routing.max_shadow_in_flight)
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def _observe(
        self, model: str, decision: Decision, seconds: float, labels: list[str] | None
    ) -> None:
        """Per-variant metrics (every routed request) and experiment statistics."""
        variant = decision.variant or ""
        outcome = "error" if labels is None else "ok"
        self.metrics.variant_requests.labels(
            model, decision.policy, variant, str(decision.version), outcome
        ).inc()
        if decision.experiment is None or decision.variant is None:
            return
        self.metrics.variant_latency.labels(model, variant).observe(seconds)
        for label in labels or ():
            self.metrics.variant_labels.labels(model, variant, label).inc()
        self.stats.record(
            decision.experiment, decision.variant, seconds, labels is None, labels or []
        )

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

    def _model_for(self, name: str, task: str) -> ServedModel:
        """The named model if it does `task`. Another task's model is refused as the
        catalog refuses it (404 model_not_found, listing this task's models), and the
        message names the route that serves it."""
        try:
            return self.catalog.get(name, task=task)
        except ModelNotFound as exc:
            other = self.catalog.models.get(name)
            if other is None:
                raise
            route = _ROUTES_BY_TASK.get(other.task, "/v1/models for what each model does")
            raise ModelNotFound(
                f"{exc.message}: it is a {other.task} model; use {route.format(model=name)}",
                details=exc.details,
            ) from None

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        request: PredictRequest,
        request_id: str,
        cache: CallContext,
    ) -> Answer:
        self.catalog.get(name)  # an unknown model: 404 listing every model, as ever
        model = self._model_for(name, CLASSIFY)
        decision = self.router.route(model, requested_version, cache.subject)
        version = decision.version
        card = model.card(version)
        labels = card.labels
        top_k = request.top_k
        limit = min(self.settings.limits.max_top_k, len(labels))
        if top_k > limit:
            raise InputInvalid(
                f"top_k: must be at most {limit} for model {name!r}",
                details=[{"loc": ["body", "top_k"], "msg": f"max {limit}"}],
            )
        texts = check_texts(request.inputs, self.settings.limits, "inputs")
        want_scores = top_k > 1 or request.return_all_scores
        outputs = (tensors.LABEL, tensors.SCORE, tensors.NUM_TOKENS, tensors.TRUNCATED) + (
            (tensors.SCORES,) if want_scores else ()
        )
        triton_seconds = 0.0

        async def compute(indices: list[int]) -> list[Any]:
            nonlocal triton_seconds
            sub = [texts[i] for i in indices]
            result = await self.triton.infer_text(name, str(version), sub, outputs, request_id)
            triton_seconds += result.triton_seconds
            tokens = result.outputs[tensors.NUM_TOKENS].reshape(-1).tolist()
            items = _predictions(result.outputs, len(sub), labels, top_k, request.return_all_scores)
            return [{"i": item, "t": t} for item, t in zip(items, tokens, strict=True)]

        params = {"top_k": top_k, "all_scores": request.return_all_scores}
        digest = card.artifact.sha256
        started = time.perf_counter()
        try:
            outcome = await self.cache.fetch(
                texts,
                compute,
                model=name,
                version=str(version),
                digest=digest,
                params=params,
                account=cache.account,
                bypass=cache.bypass,
            )
        except InfergateError:
            self._observe(name, decision, time.perf_counter() - started, None)
            raise
        predictions = [v["i"] for v in outcome.values]
        predicted = [p["label"] for p in predictions]
        self._observe(name, decision, time.perf_counter() - started, predicted)
        self._shadow(name, version, texts, predicted, request_id)
        body = {
            "model": name,
            "version": str(version),
            "score_kind": card.score_kind,
            "predictions": predictions,
            "usage": {"input_tokens": sum(v["t"] for v in outcome.values)},
        }
        return Answer(
            body=body,
            model=name,
            version=str(version),
            items=len(texts),
            triton_seconds=triton_seconds,
            cache_hits=outcome.hits,
            cacheable=outcome.cacheable,
            ttl_s=self.cache.ttl_for(name),
            headers=decision.headers,
        )

    async def embed(
        self,
        request: EmbeddingRequest,
        requested_version: str | None,
        request_id: str,
        cache: CallContext,
    ) -> Answer:
        model = self._model_for(request.model, EMBED)
        name = model.name  # the catalog's: it names the Triton model and its directory
        decision = self.router.route(model, requested_version, cache.subject)
        version = decision.version
        dim = model.card(version).embedding_dim
        if request.dimensions is not None and request.dimensions != dim:
            raise InvalidRequest(
                f"dimensions: model {name!r} produces {dim} dimensions",
                details=[{"loc": ["body", "dimensions"], "msg": f"must be {dim} or omitted"}],
                param="dimensions",
            )
        texts = check_texts(
            await self._input_texts(request, name, version), self.settings.limits, "input"
        )
        triton_seconds = 0.0

        async def compute(indices: list[int]) -> list[Any]:
            nonlocal triton_seconds
            sub = [texts[i] for i in indices]
            outputs = (tensors.EMBEDDING, tensors.NUM_TOKENS)
            result = await self.triton.infer_text(name, str(version), sub, outputs, request_id)
            triton_seconds += result.triton_seconds
            vectors = result.outputs[tensors.EMBEDDING].astype("<f4", copy=False)
            tokens = result.outputs[tensors.NUM_TOKENS].reshape(-1).tolist()
            return [{"v": vec, "t": t} for vec, t in zip(vectors, tokens, strict=True)]

        digest = model.card(version).artifact.sha256
        started = time.perf_counter()
        try:
            outcome = await self.cache.fetch(
                texts,
                compute,
                model=name,
                version=str(version),
                digest=digest,
                params={},
                account=cache.account,
                bypass=cache.bypass,
            )
        except InfergateError:
            self._observe(name, decision, time.perf_counter() - started, None)
            raise
        self._observe(name, decision, time.perf_counter() - started, [])
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
        return Answer(
            body=body,
            model=name,
            version=str(version),
            items=len(texts),
            triton_seconds=triton_seconds,
            cache_hits=outcome.hits,
            cacheable=outcome.cacheable,
            ttl_s=self.cache.ttl_for(name),
            headers=decision.headers,
        )

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
            best = np.argsort(-row, kind="stable")[:top_k]
            item["top_k"] = [{"label": labels[j], "score": float(row[j])} for j in best]
            if all_scores:
                item["scores"] = dict(zip(labels, row.tolist(), strict=True))
        predictions.append(item)
    return predictions
