"""Exception handlers: everything leaves as the one envelope (see errors.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from .context import context
from .errors import (
    BadRequest,
    InfergateError,
    InputInvalid,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from .responses import error_response


def request_id_of(request: Request) -> str | None:
    return context(request).request_id


async def on_infergate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfergateError)
    return error_response(exc, request_id_of(request))


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    # Never echo the offending value back (it may be PII) nor pydantic's internals.
    return {
        "loc": list(error.get("loc", ())),
        "msg": error.get("msg", ""),
        "type": error.get("type", ""),
    }


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [_clean(e) for e in exc.errors()]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return error_response(InputInvalid(f"{where}: {first['msg']}", details), request_id_of(request))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: InfergateError
    if exc.status_code == 404:
        error = NotFound(f"no route {request.url.path}")
    elif exc.status_code == 405:
        method = "HEAD" if context(request).head_as_get else request.method
        error = MethodNotAllowed(f"method {method} is not allowed on {request.url.path}")
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    elif exc.status_code < 500:
        error = BadRequest(str(exc.detail))
    else:
        error = InfergateError()
    response = error_response(error, request_id_of(request))
    response.status_code = exc.status_code
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    return response


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method the path takes, across all of its routes (Starlette's 405 names only
    the methods of the first route that matched the path, e.g. GET of GET/PUT/DELETE).
    Asks each route whether it would take the request with another method: the routes'
    own matching, so path converters and included routers count as they do for real.
    HEAD goes with GET (HeadAsGetMiddleware)."""
    # Without FastAPI's per-request routing state, which matching writes into.
    base = {k: v for k, v in scope.items() if k not in ("fastapi", "route", "endpoint")}
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**base, "method": method})[0] is Match.FULL for r in app.router.routes)
    ]
    if "GET" in allowed:
        allowed.insert(1, "HEAD")
    return allowed


def install(app: FastAPI) -> None:
    app.add_exception_handler(InfergateError, on_infergate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
