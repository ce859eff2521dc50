from __future__ import annotations

from fastapi import Request

from ..responses import OrjsonResponse
from ..services.inference import Answer


def answer_response(request: Request, answer: Answer) -> OrjsonResponse:
    """Tell the observe middleware what answered, count the batch, and respond."""
    state = request.state
    state.model, state.version, state.triton_seconds = (
        answer.model,
        answer.version,
        answer.triton_seconds,
    )
    request.app.state.metrics.batch_items.labels(answer.model).observe(answer.items)
    request.app.state.metrics.triton_time.labels(answer.model, answer.version).observe(
        answer.triton_seconds
    )
    return OrjsonResponse(answer.body, headers={"X-Model-Version": answer.version})
