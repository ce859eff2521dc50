"""Adds headers a dependency decided on (rate-limit headers) to whatever response the
route returns: routes return Response objects directly, so FastAPI's injected-Response
headers would be dropped. Reads the request context's `response_headers` at send time."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..context import context
from .append_headers import RawHeaders, appending_headers


class ResponseHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context(scope)

        def decided() -> RawHeaders:
            return [(k.lower().encode(), v.encode()) for k, v in ctx.response_headers.items()]

        await self.app(scope, receive, appending_headers(send, decided))
