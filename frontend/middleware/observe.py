"""Timing, access log, metrics and the last-resort error boundary, in one pass.

The access log names the route, model and version (set by the routes in the request's
context), never the body; the path and the query string are logged decoded (the query's
`%40` and `+` read as `@` and space), so that the PII masks that every log field goes
through see what a reader would. `request_id` is always ours; a client's own id is
`client_request_id`.

It is also where the usage ledger counts a request: at its end (for a stream, after the
last frame), when it reached a model (the context names one) and has a caller. The
counting is one dict update in this process (frontend/usage/ledger.py writes the sums
behind the hot path); the ledger comes from `ledger_of(scope)` (the app passes its way to
the container, which sits above the middlewares), None before start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import unquote_plus

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import RequestContext, context
from ..errors import InfergateError
from ..observability.logging import fingerprint
from ..observability.metrics import Metrics
from ..responses import send_error
from ..usage.ledger import UsageLedger

access_log = logging.getLogger("infergate.access")
error_log = logging.getLogger("infergate.error")


LedgerOf = Callable[[Scope], UsageLedger | None]


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, ledger_of: LedgerOf | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.ledger_of = ledger_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ctx = context(scope)
        status = 500
        response_started = False
        counted = False

        async def send_observed(message: Message) -> None:
            nonlocal status, response_started, counted
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves: once a client has its answer, the
                # ledger of this worker has it too (a stream's counts are final by then).
                counted = True
                self._count_usage(scope, ctx, status)
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                # Server-Timing: how long the frontend took, and how much of it was Triton.
                timing = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
                if ctx.triton_seconds is not None:
                    timing += f", triton;dur={ctx.triton_seconds * 1000:.1f}"
                MutableHeaders(scope=message).append("Server-Timing", timing)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            # Last resort: an unexpected error becomes a generic 500 envelope, logged with
            # its traceback here and never shown to the client.
            error_log.exception("unhandled error", extra=_ids(ctx))
            if not response_started:
                await send_error(send_observed, InfergateError(), ctx.request_id)
        finally:
            self.metrics.in_flight.dec()
            if not response_started and ctx.client_disconnected:
                status = 499  # the client left before the answer (nginx's convention)
            self._record(scope, ctx, status, time.perf_counter() - started)
            if not counted:  # no answer went out (the client left, or the app failed)
                self._count_usage(scope, ctx, status)

    def _count_usage(self, scope: Scope, ctx: RequestContext, status: int) -> None:
        if not ctx.model or ctx.subject is None or self.ledger_of is None:
            return
        ledger = self.ledger_of(scope)
        if ledger is None:
            return
        ledger.add(
            ctx.subject,
            ctx.account or ctx.subject,
            ctx.model,
            ctx.version,
            items=ctx.items,
            prompt_tokens=ctx.prompt_tokens,
            completion_tokens=ctx.completion_tokens,
            cache_hits=ctx.cache_hits,
            errors=int(status >= 400),
        )

    def _record(self, scope: Scope, ctx: RequestContext, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        model, version = ctx.model, ctx.version
        # The method is the client's word (h11 takes any token): a known one, or "OTHER".
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        m = self.metrics
        m.requests.labels(route, method, str(status), model, version).inc()
        m.latency.labels(route, model).observe(seconds)
        triton_seconds = ctx.triton_seconds
        if triton_seconds is not None:
            m.frontend_time.labels(route, model).observe(max(seconds - triton_seconds, 0.0))
        access_log.info(
            "request",
            extra={
                **_ids(ctx),
                "method": method,
                "path": _path_for_log(scope),
                "query": _query_for_log(scope),
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "model": model or None,
                "version": version or None,
                "triton_ms": round(triton_seconds * 1000, 2) if triton_seconds else None,
            },
        )


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def _ids(ctx: RequestContext) -> dict[str, str | None]:
    ids = {"request_id": ctx.own_request_id or ctx.request_id}
    if ctx.client_request_id:
        ids["client_request_id"] = ctx.client_request_id
    return ids


def _query_for_log(scope: Scope) -> str:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return ""
    # The masks decode percent-escapes in every field; the query's `+` (a space) only here.
    return unquote_plus(raw.decode("latin-1"), errors="replace")


# Path parameters that identify a person: logged as a fingerprint, never as the id.
_PERSONAL_PARAMS = ("user_id",)


def _path_for_log(scope: Scope) -> str:
    path: str = scope["path"]
    params = scope.get("path_params") or {}
    for name in _PERSONAL_PARAMS:
        value = params.get(name)
        if isinstance(value, str) and value:
            path = path.replace(value, fingerprint(value))
    return path
