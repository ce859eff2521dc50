"""Request id: every request gets one we make; a client's own X-Request-ID is kept beside
it only when it is plainly an id. Both go to the request's context; the response echoes the
one the client knows (theirs, else ours).

A client's id is untrusted input: it is kept only within a strict charset and length and
when the log masks would not change it (a key, token, e-mail or card number is refused),
and it is logged as `client_request_id`, masked like every client field; `request_id` in
the logs is always ours."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import context
from ..observability.logging import mask

# UUIDs, hex, W3C trace ids, "client-chosen-id-42"; 64 characters at most.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def client_request_id(raw: str) -> str | None:
    if _VALID.fullmatch(raw) is None or mask(raw) != raw:
        return None
    return raw


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = uuid.uuid4().hex
        theirs = client_request_id(Headers(scope=scope).get("x-request-id", ""))
        ctx = context(scope)
        # `request_id` is the one the client knows (error envelopes, Triton, stream ids);
        # `own_request_id` is the one the logs lead with.
        ctx.own_request_id = own
        ctx.client_request_id = theirs
        ctx.request_id = request_id = theirs or own

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
