"""One exception hierarchy, one table mapping it to HTTP.

    InfergateError                          500 internal_error
    ├── BadRequest                          400 bad_request
    │   ├── InvalidRequest                  400 validation_error       (see below)
    │   ├── JsonTooDeep                     400 json_too_deep
    │   ├── PromptTooLong                   400 prompt_too_long
    │   └── DuplicateJsonKey                400 duplicate_json_key
    ├── Unauthorized                        401 unauthorized           (+ WWW-Authenticate)
    ├── Forbidden                           403 forbidden
    ├── Conflict                            409 conflict
    │   ├── IdempotencyKeyReused            409 idempotency_key_reused
    │   ├── IdempotencyInProgress           409 idempotency_in_progress (+ Retry-After: 1)
    │   └── JobFinished                     409 job_finished
    ├── InputInvalid                        422 validation_error
    ├── RateLimited                         429 rate_limited           (+ Retry-After)
    │   ├── QuotaExceeded                   429 token_quota_exceeded   (+ Retry-After)
    │   └── JobLimitExceeded                429 job_limit_exceeded     (+ Retry-After)
    ├── RequestTimeout                      408 request_timeout        (the server; closes)
    ├── PreconditionFailed                  412 precondition_failed
    ├── PayloadTooLarge                     413 payload_too_large
    ├── UriTooLong                          414 uri_too_long           (the server)
    ├── UnsupportedEncoding                 415 unsupported_encoding
    ├── UnsupportedMediaType                415 unsupported_media_type
    ├── NotAcceptable                       406 not_acceptable
    ├── RangeNotSatisfiable                 416 range_not_satisfiable  (+ Content-Range)
    ├── HeaderTooLarge                      431 header_too_large       (the server)
    ├── NotFound                            404 not_found
    │   ├── ModelNotFound                   404 model_not_found
    │   └── VersionNotFound                 404 version_not_found
    ├── MethodNotAllowed                    405 method_not_allowed
    ├── VersionRetired                      410 version_retired
    ├── JobExpired                          410 job_expired
    ├── UpstreamUnavailable                 503 upstream_unavailable   (+ Retry-After)
    │   ├── Overloaded                      503 overloaded             (+ Retry-After)
    │   ├── ModelUnavailable                503 model_unavailable      (+ Retry-After)
    │   └── StateUnavailable                503 state_unavailable      (+ Retry-After)
    ├── DeadlineExceeded                    504 deadline_exceeded
    ├── UpstreamError                       502 upstream_error
    └── InsufficientStorage                 507 insufficient_storage   (+ Retry-After: 60)

Every error leaves as {"error": {"message", "type", "param", "code", "request_id",
"details"}}: OpenAI's envelope (message, type, param, code) plus ours. The message is
written for the client and never carries an exception class or traceback. `type` follows
the status (ERROR_TYPES: OpenAI's names; every other 4xx is invalid_request_error, every
5xx server_error); `param` is the request field at fault as a dotted path without the
leading "body" (e.g. "messages.0.content"), or null.

On the OpenAI routes (/v1/chat/completions, /v1/completions, /v1/embeddings) invalid input
is 400, as OpenAI answers it: InputInvalid (422) leaves there as InvalidRequest, the same
code and details (handlers.OPENAI_PATHS). A request schema's rule across fields
(schemas.common.Refused, raised while the body is validated) is InvalidRequest too.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

# OpenAI's error types by status; any other 4xx is a request error, any 5xx the server's.
ERROR_TYPES: Final[dict[int, str]] = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


class InfergateError(Exception):
    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(
        self, message: str = "internal error", details: Any = None, *, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.param = param

    @property
    def type(self) -> str:
        return error_type(self.status)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(InfergateError):
    status, code = 400, "bad_request"


class InvalidRequest(BadRequest):
    """A request that fails validation on an OpenAI route: OpenAI answers 400 where the
    rest of this API answers 422 (InputInvalid), with the same code and details."""

    code = "validation_error"


class JsonTooDeep(BadRequest):
    code = "json_too_deep"


class DuplicateJsonKey(BadRequest):
    code = "duplicate_json_key"


class PromptTooLong(BadRequest):
    """A generation prompt over the frontend's character cap, refused before the model
    tokenizes it (one oversized prompt would stall the model's single instance)."""

    code = "prompt_too_long"


class Unauthorized(InfergateError):
    """Missing, malformed, unknown, expired or revoked credentials. The message never says
    which, so that a caller cannot probe keys or tokens."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str = "missing or invalid credentials", details: Any = None):
        super().__init__(message, details)

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="infergate"'}


class Forbidden(InfergateError):
    status, code = 403, "forbidden"


class OutOfScope(Forbidden):
    """An API key used outside its scopes (details name the scope and what it allows)."""

    code = "out_of_scope"


class Conflict(InfergateError):
    status, code = 409, "conflict"


class IdempotencyKeyReused(Conflict):
    """An Idempotency-Key already used, by the same caller, for a different request."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    """An Idempotency-Key whose first request is still being processed (Stripe answers
    409 to concurrent duplicates): retry shortly to get its answer."""

    code, retry_after = "idempotency_in_progress", 1


class JobFinished(Conflict):
    """A cancel of a job that already succeeded or failed."""

    code = "job_finished"


class RateLimited(InfergateError):
    """429; carries the rate-limit headers of the window(s) that refused the request."""

    status, code = 429, "rate_limited"

    def __init__(
        self, message: str, retry_after: int, extra_headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, {"retry_after_s": retry_after})
        self.retry_after = retry_after
        self.extra_headers = extra_headers or {}

    def headers(self) -> dict[str, str]:
        return {**self.extra_headers, "Retry-After": str(self.retry_after)}


class QuotaExceeded(RateLimited):
    code = "token_quota_exceeded"


class JobLimitExceeded(RateLimited):
    """A job refused by its tier's job limits (rows per UTC day, concurrent jobs); details
    name the limit, its value, what is used and what was requested."""

    code = "job_limit_exceeded"

    def __init__(
        self,
        message: str,
        retry_after: int,
        extra_headers: dict[str, str] | None = None,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, retry_after, extra_headers)
        if details is not None:
            self.details = {**details, "retry_after_s": retry_after}


class InputInvalid(InfergateError):
    status, code = 422, "validation_error"


class PreconditionFailed(InfergateError):
    """A conditional request whose condition is false on a method other than GET/HEAD
    (RFC 9110 13.1.2: `If-None-Match: *` on POST)."""

    status, code = 412, "precondition_failed"


class PayloadTooLarge(InfergateError):
    status, code = 413, "payload_too_large"


class RequestTimeout(InfergateError):
    status, code = 408, "request_timeout"


class UriTooLong(InfergateError):
    status, code = 414, "uri_too_long"


class UnsupportedEncoding(InfergateError):
    """A body that is not UTF-8 (JSON bodies must be, RFC 8259)."""

    status, code = 415, "unsupported_encoding"


class UnsupportedMediaType(InfergateError):
    """An uploaded file (or a body) whose content is not what the route takes (a job's
    input must be UTF-8 JSONL or CSV), found by sniffing its bytes, not by its name."""

    status, code = 415, "unsupported_media_type"


class NotAcceptable(InfergateError):
    """An Accept header that names no representation the route can produce."""

    status, code = 406, "not_acceptable"


class RangeNotSatisfiable(InfergateError):
    """A Range beyond the representation's size; Content-Range gives the size (RFC 9110
    15.5.17)."""

    status, code = 416, "range_not_satisfiable"

    def __init__(self, size: int, message: str | None = None) -> None:
        super().__init__(message or f"range not satisfiable: the size is {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class HeaderTooLarge(InfergateError):
    status, code = 431, "header_too_large"


class NotFound(InfergateError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class MethodNotAllowed(InfergateError):
    status, code = 405, "method_not_allowed"


class VersionRetired(InfergateError):
    status, code = 410, "version_retired"


class JobExpired(InfergateError):
    """A job past its retention (expires_at): its results are gone or going."""

    status, code = 410, "job_expired"


class UpstreamUnavailable(InfergateError):
    status, code, retry_after = 503, "upstream_unavailable", 1


class MailUnavailable(UpstreamUnavailable):
    """E-mail is not configured, or the SMTP server did not take the message."""

    code, retry_after = "email_unavailable", 30


class Overloaded(UpstreamUnavailable):
    code = "overloaded"


class ModelUnavailable(UpstreamUnavailable):
    """A served model (its card is in the catalog) that Triton has not loaded: it failed
    to load, or was unloaded. Other models keep answering."""

    code = "model_unavailable"


class StateUnavailable(UpstreamUnavailable):
    """Redis is unreachable and the failure policy is closed (or the operation has no
    per-process fallback, such as creating a key)."""

    code = "state_unavailable"


class DatabaseUnavailable(UpstreamUnavailable):
    """The system of record did not answer within its deadline (or is down)."""

    code = "database_unavailable"


class DeadlineExceeded(InfergateError):
    status, code = 504, "deadline_exceeded"


class UpstreamError(InfergateError):
    status, code = 502, "upstream_error"


class InsufficientStorage(InfergateError):
    """Not enough free space where job files are stored to take an upload."""

    status, code, retry_after = 507, "insufficient_storage", 60


def envelope(error: InfergateError, request_id: str | None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
                "request_id": request_id,
                "details": error.details,
            }
        }
    )
