from __future__ import annotations

import hashlib

from fastapi import Request
from starlette.responses import Response

from ..auth.principal import Principal
from ..catalog import Catalog
from ..context import context
from ..errors import PreconditionFailed
from ..observability.metrics import Metrics
from ..responses import OrjsonResponse
from ..services.inference import Answer, CallContext
from ..settings import Settings


def call_context(request: Request, caller: Principal, settings: Settings) -> CallContext:
    """Callers opt out of the cache with `Cache-Control: no-cache` (or no-store): neither
    read nor written. The routing subject is the caller's account, or `X-User-Id` when
    the caller's role is trusted to speak for its users."""
    directives = request.headers.get("cache-control", "").lower()
    subject = caller.account
    on_behalf = request.headers.get("x-user-id")
    if on_behalf and caller.role in settings.routing.trusted_roles:
        subject = "ext:" + on_behalf[:200]
    return CallContext(
        caller.account, "no-cache" in directives or "no-store" in directives, subject
    )


def note_model(request: Request, catalog: Catalog, name: str) -> None:
    """Name the model in the request's context as soon as it is known to be served, so that
    a request that fails in Triton is still counted against it (access log, metrics, usage
    ledger errors). Only catalog names: an unknown name must not make a new label or row."""
    if name in catalog.models:
        context(request).model = name


def _etag_matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags


def _check_no_current_representation(request: Request) -> None:
    """`If-None-Match: *` asks for the method only when no representation exists; an
    answer always does, so the condition is false: 412 on POST (RFC 9110 13.1.2; 304 is
    for GET and HEAD only). Checked once the answer is known, so that a request that
    fails anyway (404, 422, ...) keeps its own error, as RFC 9110 13.2.1 wants."""
    if request.headers.get("if-none-match", "").strip() == "*":
        raise PreconditionFailed(
            "If-None-Match: * cannot hold: this request always has an answer",
            details={"header": "If-None-Match"},
        )


def answer_response(request: Request, answer: Answer, metrics: Metrics) -> Response:
    """Tell the observe middleware what answered and what it used (the usage ledger),
    count the batch, add the cache headers, and respond (304 with no body when the
    caller already has this answer)."""
    ctx = context(request)
    ctx.model, ctx.version, ctx.triton_seconds = (
        answer.model,
        answer.version,
        answer.triton_seconds,
    )
    # Set before the precondition check: a 412 still used the model.
    ctx.items, ctx.cache_hits = answer.items, answer.cache_hits
    _check_no_current_representation(request)
    metrics.batch_items.labels(answer.model).observe(answer.items)
    if answer.triton_seconds:
        metrics.triton_time.labels(answer.model, answer.version).observe(answer.triton_seconds)
    response = OrjsonResponse(
        answer.body, headers={"X-Model-Version": answer.version, **answer.headers}
    )
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
        **answer.headers,
    }
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response
