from __future__ import annotations

import hashlib

from fastapi import Request
from starlette.responses import Response

from ..responses import OrjsonResponse
from ..services.inference import Answer, CacheContext


def cache_context(request: Request, account: str) -> CacheContext:
    """Callers opt out with `Cache-Control: no-cache` (or no-store): neither read nor
    written."""
    directives = request.headers.get("cache-control", "").lower()
    return CacheContext(account, "no-cache" in directives or "no-store" in directives)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags


def answer_response(request: Request, answer: Answer) -> Response:
    """Tell the observe middleware what answered, count the batch, add the cache headers,
    and respond (304 with no body when the caller already has this answer)."""
    state = request.state
    state.model, state.version, state.triton_seconds = (
        answer.model,
        answer.version,
        answer.triton_seconds,
    )
    request.app.state.metrics.batch_items.labels(answer.model).observe(answer.items)
    if answer.triton_seconds:
        request.app.state.metrics.triton_time.labels(answer.model, answer.version).observe(
            answer.triton_seconds
        )
    response = OrjsonResponse(answer.body, headers={"X-Model-Version": answer.version})
    if not answer.cacheable:
        response.headers["Cache-Control"] = "no-store"
        return response
    etag = '"' + hashlib.sha256(response.body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={answer.ttl_s}",
        "X-Cache": "HIT" if answer.cache_hits == answer.items else "MISS",
        "X-Cache-Hits": f"{answer.cache_hits}/{answer.items}",
        "X-Model-Version": answer.version,
    }
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response
