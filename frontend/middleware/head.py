"""HEAD answers like GET without a body (RFC 9110 9.3.2).

FastAPI's routes take only the methods they declare, so HEAD on a GET route was a 405.
The app below sees GET; the response keeps GET's status and headers (Content-Length
included, as RFC 9110 allows) and loses its body here, whatever server runs the app.
The app gets a copy of the scope: the server reads the method from its own (uvicorn
sends no body, and expects none, only when it still says HEAD), and everything outside
this middleware (access log, metrics) still sees HEAD; what routing wrote into the copy
(the route) is copied back. A HEAD on a path without GET gets the 405 of that path;
`head_as_get` in the request's context lets its handler name HEAD.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import context


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a streamed body: nothing of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        context(scope).head_as_get = True  # made before the copy: the copy shares it
        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, headers_only)
        finally:
            scope.update({k: v for k, v in as_get.items() if k != "method"})
