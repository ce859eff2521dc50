"""Batch jobs under the embedded default (`serve` with no broker: the in-process executor
over SQLite and a local storage directory), on the session's real Triton.

A job submitted there runs to the end, its results equal the synchronous predict API row
by row, and it survives the stack being SIGKILLed mid-job: a new stack on the same
database and storage resumes it, and every row is in the results exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from . import jobs_http as jobs
from .stack import Stack, create_key, query, sqlite_url

pytestmark = pytest.mark.integration

ROWS = 5000
CHUNK_ROWS = 64


def _env(tmp: Path) -> dict[str, str]:
    return {
        "INFERGATE_JOBS__STORAGE_DIR": str(tmp / "jobs"),
        "INFERGATE_JOBS__CHUNK_ROWS": str(CHUNK_ROWS),
        # A killed stack's running chunk comes back when its lease ends.
        "INFERGATE_JOBS__LEASE_S": "3",
        "INFERGATE_JOBS__RECONCILE_S": "0.5",
    }


def test_a_job_runs_and_survives_a_sigkill_of_the_stack(
    triton: Any, repository: Path, tmp_path: Path
) -> None:
    database = sqlite_url(tmp_path)
    texts = jobs.texts(ROWS, seed=11)
    stack = Stack(triton, repository, tmp_path, database_url=database, env=_env(tmp_path))
    try:
        key = create_key(stack.url)["key"]
        job = jobs.submit(stack.url, key, {"model": "intent", "inputs": texts})
        assert job["state"] in ("queued", "running")
        assert job["version"], job  # resolved and recorded at submission
        jobs.wait_until(
            stack.url,
            key,
            job["id"],
            lambda j: j["progress"]["chunks_done"] >= 3,
            "the first chunks done",
            timeout_s=120,
        )
    finally:
        stack.kill()

    stack = Stack(triton, repository, tmp_path, database_url=database, env=_env(tmp_path))
    try:
        done = jobs.wait_finished(stack.url, key, job["id"], timeout_s=600)
        assert done["state"] == "succeeded", done
        progress = done["progress"]
        assert (progress["rows_total"], progress["rows_done"], progress["rows_failed"]) == (
            ROWS,
            ROWS,
            0,
        )
        rows = jobs.results(stack.url, key, job["id"])
        jobs.assert_each_row_once(rows, ROWS)
        assert jobs.errors(stack.url, key, job["id"]) == []
        jobs.assert_equal_to_sync(rows, jobs.sync_predictions(stack.url, key, texts))
    finally:
        stack.stop()


PROMPTS = [
    "Name a colour.",
    "Say hello in French.",
    "What is two plus two?",
    "Give one word for happy.",
]
GENERATION = {"max_tokens": 8, "temperature": 0}
TIERS = (
    '{"free": {"rate": []}, "unlimited": {},'
    ' "tiny": {"rate": [], "tokens_per_day": 60}}'  # about one row's reservation
)


def test_a_generation_job_equals_chat_completions_and_spends_the_token_quota(
    triton: Any, repository: Path, tmp_path: Path
) -> None:
    env = {**_env(tmp_path), "INFERGATE_AUTH__TIERS": TIERS}
    database = sqlite_url(tmp_path)
    stack = Stack(triton, repository, tmp_path, database_url=database, env=env)
    try:
        made = create_key(stack.url)
        key, subject = made["key"], f"key:{made['id']}"
        job = jobs.submit(
            stack.url, key, {"model": "chat", "inputs": PROMPTS, "parameters": GENERATION}
        )
        done = jobs.wait_finished(stack.url, key, job["id"], timeout_s=300)
        assert done["state"] == "succeeded", done
        rows = jobs.results(stack.url, key, job["id"])
        jobs.assert_each_row_once(rows, len(PROMPTS))
        # The job's tokens are in the usage ledger, written with its chunks' commits.
        prompt, completion = query(
            database,
            "SELECT sum(prompt_tokens), sum(completion_tokens) FROM usage_ledger"
            " WHERE subject = :s",
            s=subject,
        )[0]
        usage = [row["prediction"]["usage"] for row in sorted(rows, key=lambda r: r["row"])]
        assert prompt == sum(u["prompt_tokens"] for u in usage) > 0
        assert completion == sum(u["completion_tokens"] for u in usage) > 0
        # Each row is what the chat completions route answers for the same request.
        for row, text in zip(sorted(rows, key=lambda r: r["row"]), PROMPTS, strict=True):
            sync = httpx.post(
                stack.url + "/v1/chat/completions",
                headers=jobs.headers(key),
                json={"model": "chat", "messages": [{"role": "user", "content": text}]}
                | GENERATION,
                timeout=120,
            )
            assert sync.status_code == 200, sync.text
            choice = sync.json()["choices"][0]
            assert row["prediction"]["content"] == choice["message"]["content"]
            assert row["prediction"]["finish_reason"] == choice["finish_reason"]
            assert row["prediction"]["usage"] == sync.json()["usage"]

        # A tier whose day holds about one row: the chunk waits for the quota's reset.
        tiny = create_key(stack.url, tier="tiny")["key"]
        job = jobs.submit(
            stack.url, tiny, {"model": "chat", "inputs": PROMPTS, "parameters": GENERATION}
        )
        waiting = jobs.wait_until(
            stack.url,
            tiny,
            job["id"],
            lambda j: (j["waiting"] or {}).get("reason") == "token_quota",
            "the job waiting for the token quota",
            timeout_s=120,
        )
        assert waiting["state"] == "running" and waiting["progress"]["rows_done"] == 0
        cancelled = httpx.delete(
            f"{stack.url}/v1/jobs/{job['id']}", headers=jobs.headers(tiny), timeout=30
        )
        assert cancelled.status_code == 202, cancelled.text
    finally:
        stack.stop()
