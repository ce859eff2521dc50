"""The batch-job errors (design §6) through the real app's handler: status, envelope,
code and headers, as every other row of the error table (test_frontend_errors.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from frontend import errors
from frontend.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InfergateError,
    InsufficientStorage,
    JobExpired,
    JobFinished,
    JobLimitExceeded,
    NotAcceptable,
    RangeNotSatisfiable,
    UnsupportedMediaType,
)

from .test_frontend_errors import FakeTriton, _client, assert_envelope

LIMIT_HEADERS = {"RateLimit-Policy": '"free.job_rows.day";q=10000;w=86400'}
LIMIT_DETAILS = {"limit": "job_rows_per_day", "used": 9000, "limit_value": 10000}

# (the error to raise, status, code, headers it must carry)
CASES: list[tuple[Callable[[], InfergateError], int, str, dict[str, str]]] = [
    (lambda: UnsupportedMediaType("file.0: not text"), 415, "unsupported_media_type", {}),
    (lambda: NotAcceptable("JSONL or CSV only"), 406, "not_acceptable", {}),
    (
        lambda: RangeNotSatisfiable(1234),
        416,
        "range_not_satisfiable",
        {"Content-Range": "bytes */1234"},
    ),
    (lambda: IdempotencyKeyReused("key reused"), 409, "idempotency_key_reused", {}),
    (
        lambda: IdempotencyInProgress("key in progress"),
        409,
        "idempotency_in_progress",
        {"Retry-After": "1"},
    ),
    (lambda: JobFinished("job succeeded"), 409, "job_finished", {}),
    (lambda: JobExpired("job expired"), 410, "job_expired", {}),
    (
        lambda: JobLimitExceeded("rows per day", 3600, LIMIT_HEADERS, details=LIMIT_DETAILS),
        429,
        "job_limit_exceeded",
        {"Retry-After": "3600", **LIMIT_HEADERS},
    ),
    (
        lambda: InsufficientStorage("no space for uploads"),
        507,
        "insufficient_storage",
        {"Retry-After": "60"},
    ),
]


@pytest.fixture
def api(tmp_path):
    client = _client(tmp_path, FakeTriton())

    async def raise_it(name: str) -> None:
        make = {code: make for make, _, code, _ in CASES}[name]
        raise make()

    client.app.add_api_route("/test/raise/{name}", raise_it, methods=["GET"])
    yield client
    client.__exit__(None, None, None)


@pytest.mark.parametrize(("make", "status", "code", "headers"), CASES, ids=[c[2] for c in CASES])
def test_every_job_error_maps_to_its_row(api, make, status, code, headers):
    response = api.get(f"/test/raise/{code}")
    error = assert_envelope(response, status, code)
    for name, value in headers.items():
        assert response.headers[name] == value
    assert error["message"] == make().message


def test_job_limit_details_name_the_limit_and_the_wait(api):
    error = api.get("/test/raise/job_limit_exceeded").json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["details"] == {**LIMIT_DETAILS, "retry_after_s": 3600}


def test_conflicts_and_limits_keep_their_parents():
    """Handlers and clients that catch Conflict / RateLimited catch these too."""
    assert issubclass(IdempotencyKeyReused, errors.Conflict)
    assert issubclass(IdempotencyInProgress, errors.Conflict)
    assert issubclass(JobFinished, errors.Conflict)
    assert issubclass(JobLimitExceeded, errors.RateLimited)
    assert RangeNotSatisfiable(0).message == "range not satisfiable: the size is 0 bytes"


@pytest.mark.parametrize(("make", "status", "code", "headers"), CASES, ids=[c[2] for c in CASES])
def test_the_docstring_tree_lists_each(make, status, code, headers):
    name = type(make()).__name__
    assert errors.__doc__ is not None
    [line] = [row for row in errors.__doc__.splitlines() if f"── {name} " in row]
    assert f"{status} {code}" in " ".join(line.split())
