"""Batch jobs over HTTP, for the integration tests: submit, wait, download, and the row
accounting every job test ends with (each input row exactly once in the results or the
errors, none invented)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from procs.wait import wait_for

from .sentences import varied_sentences

TERMINAL = ("succeeded", "failed", "cancelled")
PREDICT = "/v1/models/intent/predict"


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key, **extra}


def submit(url: str, key: str, body: dict[str, Any], **extra: str) -> dict[str, Any]:
    r = httpx.post(url + "/v1/jobs", headers=headers(key, **extra), json=body, timeout=60)
    assert r.status_code in (200, 201), r.text
    job: dict[str, Any] = r.json()
    return job


def get(url: str, key: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers(key), timeout=30)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def try_get(url: str, key: str, job_id: str) -> dict[str, Any] | None:
    """The job, or None while the server does not answer (it is restarting)."""
    try:
        return get(url, key, job_id)
    except httpx.TransportError:
        return None


def wait_until(
    url: str, key: str, job_id: str, done: Any, what: str, timeout_s: float = 300
) -> dict[str, Any]:
    """Polls the job until `done(job)`; returns the job that satisfied it."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        job = try_get(url, key, job_id)
        if job is None:
            return False
        seen[:] = [job]
        return bool(done(job))

    wait_for(check, what, timeout_s, interval_s=0.2)
    return seen[0]


def wait_finished(url: str, key: str, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    return wait_until(url, key, job_id, lambda j: j["state"] in TERMINAL, "job finished", timeout_s)


def lines(url: str, key: str, path: str, accept: str = "application/x-ndjson") -> list[Any]:
    r = httpx.get(url + path, headers=headers(key, Accept=accept), timeout=300)
    assert r.status_code == 200, r.text[:500]
    return [json.loads(line) for line in r.text.splitlines() if line]


def results(url: str, key: str, job_id: str) -> list[dict[str, Any]]:
    return lines(url, key, f"/v1/jobs/{job_id}/results")


def errors(url: str, key: str, job_id: str) -> list[dict[str, Any]]:
    return lines(url, key, f"/v1/jobs/{job_id}/errors")


def assert_each_row_once(rows: Iterable[dict[str, Any]], total: int) -> None:
    """Rows 1 … total each exactly once: nothing lost, nothing doubled, nothing invented."""
    numbers = [row["row"] for row in rows]
    doubled = len(numbers) - len(set(numbers))
    missing = set(range(1, total + 1)) - set(numbers)
    extra = set(numbers) - set(range(1, total + 1))
    assert (doubled, len(missing), len(extra)) == (0, 0, 0), (
        f"{doubled} doubled, {len(missing)} missing (e.g. {sorted(missing)[:5]}), "
        f"{len(extra)} invented"
    )


def jsonl(texts: Sequence[str]) -> bytes:
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def texts(n: int, seed: int) -> list[str]:
    """`n` distinct rows drawn from the rated-sentence corpora, each cut to its first
    eight words: the model's cost grows with the tokens, and a job's tests are about
    rows (thousands of them), not long texts."""
    pool = [" ".join(s.split()[:8]) for s in varied_sentences()]
    rng = random.Random(seed)
    return [f"{rng.choice(pool)} #{i}" for i in range(n)]


def sync_predictions(url: str, key: str, rows: Sequence[str]) -> list[dict[str, Any]]:
    """The synchronous predict API's answers for `rows`, in order."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), 256):
        r = httpx.post(
            url + PREDICT,
            headers=headers(key),
            json={"inputs": list(rows[start : start + 256])},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        out.extend(r.json()["predictions"])
    return out


def assert_equal_to_sync(rows: list[dict[str, Any]], sync: list[dict[str, Any]]) -> None:
    """A job's result rows equal the predict API's answers row by row."""
    by_row = {row["row"]: row["prediction"] for row in rows}
    labels_differ = [n for n, p in enumerate(sync, 1) if by_row[n]["label"] != p["label"]]
    assert labels_differ == [], f"{len(labels_differ)} labels differ, e.g. rows {labels_differ[:5]}"
    worst = max(abs(by_row[n]["score"] - p["score"]) for n, p in enumerate(sync, 1))
    # Dynamic batches of other sizes may move the last bits of a float32 score.
    assert worst < 1e-5, worst
