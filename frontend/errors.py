"""One exception hierarchy, one table mapping it to HTTP.

    InfergateError                          500 internal_error
    ├── BadRequest                          400 bad_request
    │   └── JsonTooDeep                     400 json_too_deep
    ├── InputInvalid                        422 validation_error
    ├── PayloadTooLarge                     413 payload_too_large
    ├── NotFound                            404 not_found
    │   ├── ModelNotFound                   404 model_not_found
    │   └── VersionNotFound                 404 version_not_found
    ├── MethodNotAllowed                    405 method_not_allowed
    ├── UpstreamUnavailable                 503 upstream_unavailable   (+ Retry-After)
    │   └── Overloaded                      503 overloaded             (+ Retry-After)
    ├── DeadlineExceeded                    504 deadline_exceeded
    └── UpstreamError                       502 upstream_error

Every error leaves as {"error": {"code", "message", "request_id", "details"}}; the
message is written for the client and never carries an exception class or traceback.
"""

from __future__ import annotations

from typing import Any

import orjson


class InfergateError(Exception):
    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str = "internal error", details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(InfergateError):
    status, code = 400, "bad_request"


class JsonTooDeep(BadRequest):
    code = "json_too_deep"


class InputInvalid(InfergateError):
    status, code = 422, "validation_error"


class PayloadTooLarge(InfergateError):
    status, code = 413, "payload_too_large"


class NotFound(InfergateError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class MethodNotAllowed(InfergateError):
    status, code = 405, "method_not_allowed"


class UpstreamUnavailable(InfergateError):
    status, code, retry_after = 503, "upstream_unavailable", 1


class Overloaded(UpstreamUnavailable):
    code = "overloaded"


class DeadlineExceeded(InfergateError):
    status, code = 504, "deadline_exceeded"


class UpstreamError(InfergateError):
    status, code = 502, "upstream_error"


def envelope(error: InfergateError, request_id: str | None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "code": error.code,
                "message": error.message,
                "request_id": request_id,
                "details": error.details,
            }
        }
    )
