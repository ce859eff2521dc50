"""Exception handlers: everything leaves as the one envelope (see errors.py)."""

from __future__ import annotations

from typing import Any, Final

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
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from .responses import error_response
from .schemas.common import Refused

# The routes an OpenAI client calls: there invalid input is 400 (OpenAI's status), not 422.
OPENAI_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# Where FastAPI says a request value came from: the first part of a validation error's loc.
_SOURCES: Final = frozenset({"body", "query", "path", "header", "cookie"})


def request_id_of(request: Request) -> str | None:
    return context(request).request_id


def is_openai_route(request: Request) -> bool:
    return request.scope.get("path") in OPENAI_PATHS


def _dotted(path: list[Any]) -> str | None:
    return ".".join(str(part) for part in path) or None


def _param_of(details: Any) -> str | None:
    """The field a service's InputInvalid names in its details (their first loc)."""
    if isinstance(details, list) and details and isinstance(details[0], dict):
        loc = details[0].get("loc")
        if isinstance(loc, list) and loc:
            return _dotted(loc[1:] if loc[0] in _SOURCES else loc)
    return None


async def on_infergate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfergateError)
    error = exc
    if isinstance(exc, InputInvalid):
        if exc.param is None:  # a service's check names its field in the details
            exc.param = _param_of(exc.details)
        if is_openai_route(request):
            error = InvalidRequest(exc.message, exc.details, param=exc.param)
    return error_response(error, request_id_of(request))


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    # Never echo the offending value back (it may be PII) nor pydantic's internals.
    return {
        "loc": list(error.get("loc", ())),
        "msg": error.get("msg", ""),
        "type": error.get("type", ""),
    }


def field_path(loc: tuple[Any, ...] | list[Any], body: Any, missing: bool) -> list[Any]:
    """A validation error's field as the client wrote it: the loc without its source
    ("body", "query"...) and without the names pydantic gives the member of a union it
    tried ("str", "list[...]", a discriminator's tag such as "user"), found by walking the
    request body: a part of the loc that is not in the body is such a name, except the
    last one of a missing field."""
    parts = list(loc[1:]) if loc and loc[0] in _SOURCES else list(loc)
    if not loc or loc[0] != "body" or body is None:
        return parts
    path: list[Any] = []
    node = body
    for i, part in enumerate(parts):
        if _holds(node, part):
            node = node[part]
            path.append(part)
        elif missing and i == len(parts) - 1:
            path.append(part)
    return path


def _holds(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and type(part) is int and 0 <= part < len(node)


def _reason(error: dict[str, Any]) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own."""
    ctx = error.get("ctx") or {}
    if error.get("type") == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error.get("msg", ""))


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = [_clean(e) for e in errors]
    error: InfergateError
    if not errors:
        error = InputInvalid("request: invalid request", details)
    else:
        first = errors[0]
        path = field_path(first.get("loc", ()), exc.body, first.get("type") == "missing")
        if is_openai_route(request):
            where = _dotted(["body", *path])
            error = InvalidRequest(f"{where}: {_reason(first)}", details, param=_dotted(path))
        else:
            where = ".".join(str(p) for p in details[0]["loc"]) or "request"
            error = InputInvalid(f"{where}: {details[0]['msg']}", details, param=_dotted(path))
    return error_response(error, request_id_of(request))


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
    error.status = exc.status_code  # its type follows the status too
    response = error_response(error, request_id_of(request))
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


async def on_refused(request: Request, exc: Exception) -> Response:
    """A schema's rule across fields (schemas.common.Refused): 400 naming the field."""
    assert isinstance(exc, Refused)
    details = [{"loc": exc.loc(), "msg": exc.why, "type": "refused"}]
    error = InvalidRequest(exc.message, details, param=exc.param)
    return error_response(error, request_id_of(request))


def install(app: FastAPI) -> None:
    app.add_exception_handler(InfergateError, on_infergate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
