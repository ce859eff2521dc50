"""Idempotency-Key on POST /v1/jobs, Stripe's semantics, through the real app over a
SQLite FILE database (concurrent claims really race): the same key and body answer the
same job (200, Idempotent-Replayed); another body is 409; ten concurrent twins make
exactly one job; a failed submission keeps nothing; keys are per owner."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from frontend.errors import InputInvalid
from frontend.jobs import idempotency

from .job_app import job_app
from .test_frontend_errors import assert_envelope

BODY = {"model": "intent", "inputs": ["one", "two"], "parameters": {"top_k": 2}}
KEY = {"Idempotency-Key": "order-1234"}


def _all_jobs(app) -> list[dict]:
    return app.client.get("/v1/admin/jobs", params={"limit": 100}).json()["data"]


def test_the_same_key_and_body_answer_the_same_job(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        first = app.submit(BODY, **KEY)
        assert first.status_code == 201, first.text
        assert "Idempotent-Replayed" not in first.headers
        # The same body with its keys in another order is the same request.
        again = app.submit(dict(reversed(list(BODY.items()))), **KEY)
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Location"] == first.headers["Location"]
        assert len(_all_jobs(app)) == 1


def test_another_body_with_the_key_is_409_and_keys_are_per_owner(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        job_id = app.submit(BODY, **KEY).json()["id"]
        other_body = {**BODY, "inputs": ["three"]}
        error = assert_envelope(app.submit(other_body, **KEY), 409, "idempotency_key_reused")
        assert error["param"] == "Idempotency-Key"
        someone = app.key("someone")
        theirs = app.submit(BODY, key=someone, **KEY)
        assert theirs.status_code == 201 and theirs.json()["id"] != job_id
        assert len(_all_jobs(app)) == 2


def test_a_failed_submission_frees_its_key(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        bad = {**BODY, "parameters": {"top_k": "two"}}
        assert_envelope(app.submit(bad, **KEY), 422, "validation_error")
        fixed = app.submit(BODY, **KEY)
        assert fixed.status_code == 201, fixed.text
        assert len(_all_jobs(app)) == 1


def test_ten_concurrent_twins_make_exactly_one_job(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        start = threading.Barrier(10)

        def one(_: int):
            start.wait(timeout=10)
            return app.submit(BODY, **{"Idempotency-Key": "concurrent"})

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(one, range(10)))
        codes = sorted(r.status_code for r in answers)
        assert codes.count(201) == 1, [r.text for r in answers]
        assert set(codes) <= {200, 201, 409}
        made = next(r for r in answers if r.status_code == 201).json()["id"]
        for r in answers:
            if r.status_code == 200:
                assert r.json()["id"] == made and r.headers["Idempotent-Replayed"] == "true"
            if r.status_code == 409:
                assert_envelope(r, 409, "idempotency_in_progress")
                assert r.headers["Retry-After"] == "1"
        assert [j["id"] for j in _all_jobs(app)] == [made]
        # Once the first is done, a twin is a replay.
        late = app.submit(BODY, **{"Idempotency-Key": "concurrent"})
        assert late.status_code == 200 and late.json()["id"] == made


def test_request_hashes_and_key_checks():
    assert idempotency.json_hash({"a": 1, "b": [1, 2]}, "/v1/jobs") == idempotency.json_hash(
        {"b": [1, 2], "a": 1}, "/v1/jobs"
    )
    assert idempotency.json_hash({"a": 1}, "/v1/jobs") != idempotency.json_hash(
        {"a": 2}, "/v1/jobs"
    )
    files = [("a.csv", "00" * 32), ("b.csv", "11" * 32)]
    assert idempotency.upload_hash({"model": "m"}, files) != idempotency.upload_hash(
        {"model": "m"}, files[::-1]
    )
    assert idempotency.parse_key(None) is None
    assert idempotency.parse_key("k" * 255) == "k" * 255
    for bad in ("", "k" * 256, "tab\there", "é"):
        with pytest.raises(InputInvalid, match="Idempotency-Key"):
            idempotency.parse_key(bad)
