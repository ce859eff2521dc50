"""Error responses the server writes itself, before (or instead of) the app: the same
envelope, request id and security headers as the app's own errors."""

from __future__ import annotations

import http
import uuid

from ..errors import InfergateError, envelope
from ..middleware.security_headers import api_headers


def raw_error(
    error: InfergateError,
    request_id: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
    hsts: str | None = None,
) -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    request_id = request_id or uuid.uuid4().hex
    body = envelope(error, request_id)
    phrase = http.HTTPStatus(error.status).phrase
    headers = [
        *(extra or []),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
        *api_headers(hsts),
        *((k.lower().encode(), v.encode()) for k, v in error.headers().items()),
    ]
    head = [f"HTTP/1.1 {error.status} {phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*head, b"\r\n", body])
