"""Orchestration for text models: resolve the version, call Triton once for the whole
batch, shape the answer. Routes stay thin; this holds the logic."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cache.service import ResultCache
from ..errors import InputInvalid
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.predict import PredictRequest
from ..settings import Settings
from ..triton.client import TritonClient
from .catalog import Catalog
from .texts import check_texts


@dataclass(frozen=True, slots=True)
class CacheContext:
    account: str  # whose cache entries (tenant scope)
    bypass: bool  # the caller sent Cache-Control: no-cache / no-store


@dataclass
class Answer:
    body: dict[str, Any]
    model: str
    version: str
    items: int
    triton_seconds: float
    cache_hits: int = 0
    cacheable: bool = False
    ttl_s: int = 0


class InferenceService:
    def __init__(
        self, settings: Settings, catalog: Catalog, triton: TritonClient, cache: ResultCache
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton
        self.cache = cache

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        request: PredictRequest,
        request_id: str,
        cache: CacheContext,
    ) -> Answer:
        model = self.catalog.get(name)
        if model.task != "text-classification":
            raise InputInvalid(
                f"model {name!r} is a {model.task} model; use /v1/embeddings",
                details=[{"loc": ["path", "model"], "msg": "not a classification model"}],
            )
        version = self.catalog.resolve_version(model, requested_version)
        card = model.card(version)
        labels: list[str] = card["labels"]
        top_k = request.top_k
        limit = min(self.settings.limits.max_top_k, len(labels))
        if top_k > limit:
            raise InputInvalid(
                f"top_k: must be at most {limit} for model {name!r}",
                details=[{"loc": ["body", "top_k"], "msg": f"max {limit}"}],
            )
        texts = check_texts(request.inputs, self.settings.limits, "inputs")
        want_scores = top_k > 1 or request.return_all_scores
        outputs = ("LABEL", "SCORE", "NUM_TOKENS", "TRUNCATED") + (
            ("SCORES",) if want_scores else ()
        )
        triton_seconds = 0.0

        async def compute(indices: list[int]) -> list[Any]:
            nonlocal triton_seconds
            sub = [texts[i] for i in indices]
            result = await self.triton.infer_text(name, str(version), sub, outputs, request_id)
            triton_seconds += result.triton_seconds
            tokens = result.outputs["NUM_TOKENS"].reshape(-1).tolist()
            items = _predictions(result.outputs, len(sub), labels, top_k, request.return_all_scores)
            return [{"i": item, "t": t} for item, t in zip(items, tokens, strict=True)]

        params = {"top_k": top_k, "all_scores": request.return_all_scores}
        digest = card["artifact"]["sha256"]
        outcome = await self.cache.fetch(
            name, str(version), digest, params, texts, cache.account, cache.bypass, compute
        )
        predictions = [v["i"] for v in outcome.values]
        body = {
            "model": name,
            "version": str(version),
            "score_kind": card.get("score_kind"),
            "predictions": predictions,
            "usage": {"input_tokens": sum(v["t"] for v in outcome.values)},
        }
        return Answer(
            body,
            name,
            str(version),
            len(texts),
            triton_seconds,
            outcome.hits,
            outcome.cacheable,
            self.cache.ttl_for(name),
        )

    async def embed(
        self,
        request: EmbeddingRequest,
        requested_version: str | None,
        request_id: str,
        cache: CacheContext,
    ) -> Answer:
        model = self.catalog.get(request.model, task="feature-extraction")
        version = self.catalog.resolve_version(model, requested_version)
        dim = model.card(version)["embedding_dim"]
        if request.dimensions is not None and request.dimensions != dim:
            raise InputInvalid(
                f"dimensions: model {request.model!r} produces {dim} dimensions",
                details=[{"loc": ["body", "dimensions"], "msg": f"must be {dim} or omitted"}],
            )
        texts = check_texts(request.input, self.settings.limits, "input")
        triton_seconds = 0.0

        async def compute(indices: list[int]) -> list[Any]:
            nonlocal triton_seconds
            sub = [texts[i] for i in indices]
            result = await self.triton.infer_text(
                request.model, str(version), sub, ("EMBEDDING", "NUM_TOKENS"), request_id
            )
            triton_seconds += result.triton_seconds
            vectors = result.outputs["EMBEDDING"].astype("<f4", copy=False)
            tokens = result.outputs["NUM_TOKENS"].reshape(-1).tolist()
            return [{"v": vec, "t": t} for vec, t in zip(vectors, tokens, strict=True)]

        digest = model.card(version)["artifact"]["sha256"]
        outcome = await self.cache.fetch(
            request.model, str(version), digest, {}, texts, cache.account, cache.bypass, compute
        )
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
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Answer(
            body,
            request.model,
            str(version),
            len(texts),
            triton_seconds,
            outcome.hits,
            outcome.cacheable,
            self.cache.ttl_for(request.model),
        )


def _predictions(
    out: dict[str, np.ndarray], n: int, labels: list[str], top_k: int, all_scores: bool
) -> list[dict[str, Any]]:
    label_out = out["LABEL"].reshape(-1)
    score_out = out["SCORE"].reshape(-1).tolist()
    truncated = out["TRUNCATED"].reshape(-1).tolist()
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
            row = out["SCORES"][i]
            best = np.argsort(-row, kind="stable")[:top_k]
            item["top_k"] = [{"label": labels[j], "score": float(row[j])} for j in best]
            if all_scores:
                item["scores"] = dict(zip(labels, row.tolist(), strict=True))
        predictions.append(item)
    return predictions
