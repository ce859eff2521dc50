"""orjson responses and the error envelope as a response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

from .errors import InfergateError, envelope


class OrjsonResponse(JSONResponse):
    """A JSONResponse (so that OpenAPI documents the response model) rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(error: InfergateError, request_id: str | None) -> Response:
    return Response(
        envelope(error, request_id),
        status_code=error.status,
        headers=error.headers(),
        media_type="application/json",
    )


async def send_error(send: Any, error: InfergateError, request_id: str | None) -> None:
    """For pure ASGI middleware that answers before the app runs."""
    body = envelope(error, request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
