"""Token classification (ner, pii): the spans each text holds, from the model's ENTITIES
JSON, cached per text like any other model's answer."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..catalog import ServedModel
from ..errors import InputInvalid, UpstreamError
from ..schemas.entities import EntitiesRequest
from ..triton import tensors
from .bodies import json_body
from .model_calls import TOKENS, Answer, CallContext, ModelCalls, TritonClock
from .refusals import TextRefused, refused_text
from .texts import check_texts

OUTPUTS = (tensors.ENTITIES, tensors.NUM_TOKENS, tensors.TRUNCATED)


class EntityService:
    def __init__(self, calls: ModelCalls) -> None:
        self.calls = calls

    async def read(self, request: Request, model: ServedModel) -> EntitiesRequest:
        return await json_body(request, EntitiesRequest)

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        body: EntitiesRequest,
        request_id: str,
        call: CallContext,
    ) -> Answer:
        calls = self.calls
        routed = calls.route(name, TOKENS, requested_version, call)
        limits = calls.settings.limits
        texts = check_texts(body.inputs, limits, "inputs", limits.max_entity_items)
        clock = TritonClock()

        async def compute(indices: list[int]) -> list[Any]:
            sub = [texts[i] for i in indices]
            try:
                result = await calls.triton.infer_text(
                    name, routed.version, sub, OUTPUTS, request_id
                )
            except InputInvalid as exc:  # "TEXT[j] ...": j counts the cache's misses
                refused = refused_text(exc, sub)
                if refused is None:
                    raise
                raise refused from exc
            clock.seconds += result.triton_seconds
            out = result.outputs
            found = out[tensors.ENTITIES].reshape(-1)
            tokens = out[tensors.NUM_TOKENS].reshape(-1).tolist()
            truncated = out[tensors.TRUNCATED].reshape(-1).tolist()
            return [
                {"e": _entities(found[j], text, name), "t": tokens[j], "x": bool(truncated[j])}
                for j, text in enumerate(sub)
            ]

        try:
            outcome = await calls.fetch(
                routed,
                texts,
                compute,
                {},
                call,
                lambda values: [e["label"] for v in values for e in v["e"]],
            )
        except TextRefused as exc:
            raise exc.as_item_error(texts, body.inputs) from None
        answer = {
            "model": name,
            "version": routed.version,
            "task": TOKENS,
            "predictions": [{"entities": v["e"], "truncated": v["x"]} for v in outcome.values],
            "usage": {"input_tokens": sum(v["t"] for v in outcome.values)},
        }
        return calls.answer(routed, answer, len(texts), clock.seconds, outcome)


def _entities(raw: bytes, text: str, model: str) -> list[dict[str, Any]]:
    """The model's spans as the API gives them: text, label, start, end, and score where
    the model has one. A span that is not the text's own slice is the model breaking its
    contract (export/runtime: text == original[start:end]), answered 502, never passed on."""
    try:
        spans = json.loads(raw)
        entities = []
        for span in spans:
            start, end = int(span["start"]), int(span["end"])
            if not 0 <= start < end <= len(text) or text[start:end] != span["text"]:
                raise ValueError("span is not the text's slice")
            entity: dict[str, Any] = {
                "text": span["text"],
                "label": str(span["label"]),
                "start": start,
                "end": end,
            }
            if span.get("score") is not None:
                entity["score"] = float(span["score"])
            entities.append(entity)
    except (ValueError, TypeError, KeyError) as exc:
        raise UpstreamError(f"model {model!r} returned malformed entities") from exc
    return entities
