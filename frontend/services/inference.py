"""Orchestration for text models: resolve the version, call Triton once for the whole
batch, shape the answer. Routes stay thin; this holds the logic."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputInvalid
from ..schemas.embeddings import EmbeddingRequest
from ..schemas.predict import PredictRequest
from ..settings import Settings
from ..triton.client import TritonClient
from .catalog import Catalog
from .texts import check_texts


@dataclass
class Answer:
    body: dict[str, Any]
    model: str
    version: str
    items: int
    triton_seconds: float


class InferenceService:
    def __init__(self, settings: Settings, catalog: Catalog, triton: TritonClient) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton

    async def predict(
        self, name: str, requested_version: str | None, request: PredictRequest, request_id: str
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
        result = await self.triton.infer_text(name, str(version), texts, outputs, request_id)
        out = result.outputs
        label_out = out["LABEL"].reshape(-1)
        score_out = out["SCORE"].reshape(-1).tolist()
        truncated = out["TRUNCATED"].reshape(-1).tolist()
        predictions = []
        for i in range(len(texts)):
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
                if request.return_all_scores:
                    item["scores"] = dict(zip(labels, row.tolist(), strict=True))
            predictions.append(item)
        body = {
            "model": name,
            "version": str(version),
            "score_kind": card.get("score_kind"),
            "predictions": predictions,
            "usage": {"input_tokens": int(out["NUM_TOKENS"].sum())},
        }
        return Answer(body, name, str(version), len(texts), result.triton_seconds)

    async def embed(
        self, request: EmbeddingRequest, requested_version: str | None, request_id: str
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
        result = await self.triton.infer_text(
            request.model, str(version), texts, ("EMBEDDING", "NUM_TOKENS"), request_id
        )
        vectors = result.outputs["EMBEDDING"].astype("<f4", copy=False)
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
        tokens = int(result.outputs["NUM_TOKENS"].sum())
        body = {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Answer(body, request.model, str(version), len(texts), result.triton_seconds)
