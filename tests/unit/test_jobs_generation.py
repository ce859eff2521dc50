"""Text-generation jobs (frontend/jobs/generation_adapter.py): the parameters a job may
set are checked at submission as the chat route checks them (422 naming the parameter;
no stream, n, tools or logprobs: a row holds one answer); the principal rebuilt from the
job row is its submitter's (their token quota); tokens are summed for the usage ledger
and a row's CSV values flatten its usage. The end-to-end run over the real chat model
is tests/integration/test_jobs_embedded.py."""

from __future__ import annotations

import pytest

from frontend.db.jobs import JobRow
from frontend.jobs.generation_adapter import (
    CSV_COLUMNS,
    GenerationAdapter,
    principal_of,
    request_of,
    tokens_of,
)

from .cards import WITH_KINDS
from .job_app import job_app, job_settings
from .test_frontend_errors import assert_envelope

WITH_CHAT = (*WITH_KINDS, ("chat", 1, "text-generation"))


def _chat_job(tmp_path, parameters):
    return {"model": "chat", "inputs": ["hello"], "parameters": parameters}


@pytest.mark.parametrize(
    ("parameters", "param"),
    [
        ({"stream": True}, "parameters.stream"),
        ({"n": 2}, "parameters.n"),
        ({"logprobs": True}, "parameters.logprobs"),
        ({"messages": []}, "parameters.messages"),
        ({"max_tokens": 5000}, "parameters.max_tokens"),
        ({"max_completion_tokens": 5000}, "parameters.max_completion_tokens"),
        ({"temperature": 9}, "parameters.temperature"),
    ],
)
def test_generation_parameters_are_checked_at_submission(tmp_path, parameters, param):
    with job_app(tmp_path, executor="off", served=WITH_CHAT) as app:
        r = app.submit(_chat_job(tmp_path, parameters))
        assert_envelope(r, 422, "validation_error")
        [detail] = r.json()["error"]["details"]
        assert detail["loc"] == ["body", *param.split(".")], r.text


def test_a_generation_job_is_accepted_with_sampling_parameters(tmp_path):
    with job_app(tmp_path, executor="off", served=WITH_CHAT) as app:
        r = app.submit(_chat_job(tmp_path, {"max_tokens": 16, "temperature": 0, "seed": 3}))
        assert r.status_code == 201, r.text
        assert (r.json()["task"], r.json()["version"]) == ("text-generation", "1")


def _row(**fields) -> JobRow:
    base = dict(
        id="job_x",
        owner="key:k1",
        account="user:u1",
        subject="key:k1",
        tier="pro",
        model="chat",
        version="1",
        task="text-generation",
        created_at=0.0,
        updated_at=0.0,
        parameters={"max_tokens": 4},
        key_id="k1",
        key_limits={"tokens_per_minute": 100},
    )
    return JobRow(**{**base, **fields})


def test_the_principal_is_the_submitters_with_its_key_limits():
    p = principal_of(_row())
    assert (p.subject, p.account, p.tier, p.owner, p.key_id) == (
        "key:k1",
        "user:u1",
        "pro",
        "key:k1",
        "k1",
    )
    assert p.kind == "api_key" and p.role == "user"
    assert p.limits is not None and p.limits.tokens_per_minute == 100
    user = principal_of(_row(key_id=None, key_limits=None, subject="user:u1", owner="user:u1"))
    assert (user.kind, user.limits) == ("user", None)


def test_each_row_is_one_user_message_with_the_jobs_parameters():
    body = request_of(_row(), "tell me a joke")
    assert body.model == "chat" and body.max_tokens == 4
    assert [m.content for m in body.messages] == ["tell me a joke"]
    assert not body.stream


def test_tokens_and_csv_values(tmp_path):
    answered = {
        "content": "hi",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
    }
    assert tokens_of([answered, answered, object()]) == (14, 8)
    assert tokens_of([{"label": "x"}]) == (0, 0)
    adapter = GenerationAdapter(None, job_settings(tmp_path))  # type: ignore[arg-type]
    assert adapter.csv_columns == CSV_COLUMNS
    assert adapter.csv_values(answered) == ["hi", "length", 7, 4]
    assert adapter.max_rows == 8  # jobs.generation_chunk_rows


def test_a_token_quota_refusal_defers_the_chunk_to_the_reset():
    from frontend.errors import QuotaExceeded
    from frontend.jobs import failures

    verdict = failures.judge(QuotaExceeded("out of tokens", 120), 3, 1, 20, now=1000.0)
    assert verdict.outcome == "deferred"
    assert verdict.not_before == 1120.0
    assert verdict.waiting == {"reason": "token_quota", "until": 1120.0}
    # However many times: waiting for a quota is not a failed attempt.
    again = failures.judge(QuotaExceeded("out of tokens", 5), 3, 20, 20, now=1000.0)
    assert again.outcome == "deferred"
