"""Summarization (summarize): extractive (the model picks sentences; the answer gives each
as the input's own slice) or abstractive (the model writes; seconds per text, so these
calls get the generation deadline). One Triton request per batch, the options sent per
row; cached per text with the one option its method reads.

A refused text (Triton's INVALID_ARG "TEXT[j]...", j counting the texts of that Triton
request, which holds only the cache's misses) is reported as the request's own item,
`inputs.i`, as images.py reports an image; entities.py does the same with these helpers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from starlette.requests import Request

from ..catalog import ServedModel
from ..errors import InputInvalid, UpstreamError
from ..schemas.summaries import SummarizeRequest
from ..triton import tensors
from .bodies import json_body
from .model_calls import SUMMARIES, Answer, CallContext, ModelCalls, TritonClock
from .refusals import TextRefused, refused_text
from .texts import check_texts

OUTPUTS = (
    tensors.SUMMARY,
    tensors.METHOD,
    tensors.SENTENCES,
    tensors.SOURCE_SENTENCES,
    tensors.CHUNKS,
    tensors.NUM_TOKENS,
)


class SummaryService:
    def __init__(self, calls: ModelCalls) -> None:
        self.calls = calls

    async def read(self, request: Request, model: ServedModel) -> SummarizeRequest:
        return await json_body(request, SummarizeRequest)

    def timeout(self, name: str, method: str) -> float | None:
        """An abstractive summary is generated (the chat model, map-reduce over a long
        text): the generation routes' deadline, generation.timeout_s, unless
        triton.timeouts names one for the model. Extractive: the model's usual one."""
        settings = self.calls.settings
        if method != "abstractive":
            return None
        return settings.triton.timeouts.get(name, settings.generation.timeout_s)

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        body: SummarizeRequest,
        request_id: str,
        call: CallContext,
    ) -> Answer:
        calls = self.calls
        routed = calls.route(name, SUMMARIES, requested_version, call)
        offered = routed.card.methods or []
        if body.method is None and offered:
            body = body.model_copy(update={"method": offered[0]})
        if body.method not in offered:
            raise InputInvalid(
                f"method: model {name!r} offers {' and '.join(offered)}",
                details=[{"loc": ["body", "method"], "msg": f"one of {offered}"}],
            )
        method: str = body.method
        limits = calls.settings.limits
        texts = check_texts(body.inputs, limits, "inputs", limits.max_summary_items)
        extractive = method == "extractive"
        clock = TritonClock()

        async def compute(indices: list[int]) -> list[Any]:
            sub = [texts[i] for i in indices]
            n = len(sub)
            inputs = {
                tensors.TEXT: _column([t.encode("utf-8") for t in sub]),
                tensors.METHOD: _column([method.encode()] * n),
                tensors.MAX_SENTENCES: np.full((n, 1), body.max_sentences, dtype=np.int32),
                tensors.MAX_TOKENS: np.full((n, 1), body.max_tokens, dtype=np.int32),
            }
            try:
                result = await calls.triton.infer(
                    name,
                    routed.version,
                    inputs,
                    OUTPUTS,
                    request_id,
                    self.timeout(name, method),
                )
            except InputInvalid as exc:
                refused = refused_text(exc, sub)
                if refused is None:
                    raise
                raise refused from exc
            clock.seconds += result.triton_seconds
            return _summaries(result.outputs, sub, name)

        # Only the option the method reads: max_tokens does not change an extractive one.
        params = (
            {"method": method, "max_sentences": body.max_sentences}
            if extractive
            else {"method": method, "max_tokens": body.max_tokens}
        )
        try:
            outcome = await calls.fetch(routed, texts, compute, params, call, lambda values: [])
        except TextRefused as exc:
            raise exc.as_item_error(texts, body.inputs) from None
        answer = {
            "model": name,
            "version": routed.version,
            "task": SUMMARIES,
            "predictions": [
                _prediction(text, v) for text, v in zip(texts, outcome.values, strict=True)
            ],
            "usage": {"input_tokens": sum(v["t"] for v in outcome.values)},
        }
        return calls.answer(routed, answer, len(texts), clock.seconds, outcome)


def _column(values: list[bytes]) -> np.ndarray:
    column = np.empty((len(values), 1), dtype=np.object_)
    column[:, 0] = values
    return column


def _summaries(out: dict[str, np.ndarray], texts: list[str], model: str) -> list[dict[str, Any]]:
    """What the cache keeps per text: the summary, its method, the counts, and the chosen
    sentences' offsets (checked against the text: the answer slices it)."""
    summary = out[tensors.SUMMARY].reshape(-1)
    method = out[tensors.METHOD].reshape(-1)
    sentences = out[tensors.SENTENCES].reshape(-1)
    source = out[tensors.SOURCE_SENTENCES].reshape(-1).tolist()
    chunks = out[tensors.CHUNKS].reshape(-1).tolist()
    tokens = out[tensors.NUM_TOKENS].reshape(-1).tolist()
    values = []
    for j, text in enumerate(texts):
        try:
            chosen = [
                {"index": int(s["index"]), "start": int(s["start"]), "end": int(s["end"])}
                for s in json.loads(sentences[j])
            ]
        except (ValueError, TypeError, KeyError) as exc:
            raise UpstreamError(f"model {model!r} returned malformed sentences") from exc
        if any(not 0 <= s["start"] <= s["end"] <= len(text) for s in chosen):
            raise UpstreamError(f"model {model!r} returned sentences outside the text")
        values.append(
            {
                "s": summary[j].decode("utf-8"),
                "m": method[j].decode("utf-8"),
                "n": source[j],
                "c": chunks[j],
                "x": chosen,
                "t": tokens[j],
            }
        )
    return values


def _prediction(text: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": value["s"],
        "method": value["m"],
        "source_chars": len(text),
        "source_sentences": value["n"],
        "chunks": value["c"],
        "sentences": [{**s, "text": text[s["start"] : s["end"]]} for s in value["x"]],
    }
