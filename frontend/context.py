"""What one request's middlewares, dependencies and routes tell each other, typed.

One `RequestContext` per HTTP request, kept in the ASGI scope under one key. The outermost
middleware that needs it creates it; everything inside reads and writes its fields (never
string keys of `scope["state"]`). `context(...)` takes a scope or a Starlette `Request`.
Middlewares that copy the scope (HeadAsGetMiddleware) copy the reference: one context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

_KEY = "infergate.context"


@dataclass(slots=True)
class RequestContext:
    # The id the client knows (theirs when it is plainly an id, else ours): error
    # envelopes, Triton request ids and stream ids carry it.
    request_id: str | None = None
    # Ours, always made by RequestIdMiddleware: the logs lead with it.
    own_request_id: str | None = None
    # The client's X-Request-ID when it passed the checks; logged beside ours.
    client_request_id: str | None = None
    # What answered: named in the access log and the request metrics.
    model: str = ""
    version: str = ""
    triton_seconds: float | None = None
    # Set by DisconnectCancelMiddleware when the client went away mid-request.
    client_disconnected: bool = False
    # A HEAD served by the GET route (HeadAsGetMiddleware): logs still name HEAD.
    head_as_get: bool = False
    # Headers a dependency decided on (rate limits), added to whatever response goes out.
    response_headers: dict[str, str] = field(default_factory=dict)
    # Who asked (set once credentials are checked): the usage ledger counts against them.
    subject: str | None = None
    account: str | None = None
    # What the request used, for the usage ledger (set by the services that know).
    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0


def context(where: Scope | HTTPConnection) -> RequestContext:
    """This request's context, created on first use."""
    scope = where.scope if isinstance(where, HTTPConnection) else where
    found = scope.get(_KEY)
    if found is None:
        found = scope[_KEY] = RequestContext()
    return found


def existing_context(scope: Mapping[str, object]) -> RequestContext | None:
    """This request's context if the app made one; None otherwise. For code outside the
    app (the server's own answers), which must not add to a scope it does not own."""
    found = scope.get(_KEY)
    return found if isinstance(found, RequestContext) else None
