"""What a failed chunk attempt means for its job (design §4.1 step 7): try the chunk again
later, wait for a quota's reset, or fail the job with an error its status shows.

Retryable: Triton or a dependency down or busy (UpstreamUnavailable and its subclasses,
the database's outage included), a deadline, the job storage (OSError). They back off
exponentially with jitter, min(60, 2 ** attempts) s ± 20 %, until the chunk's attempts
run out. Anything else (an unknown model or version, a retired one, a refusal that names
no row, a bug) fails the job at once: retrying it would fail the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from ..db.jobs import JobRow
from ..errors import (
    DeadlineExceeded,
    InfergateError,
    ModelUnavailable,
    QuotaExceeded,
    UpstreamUnavailable,
)

RETRYABLE = (UpstreamUnavailable, DeadlineExceeded, TimeoutError, OSError)
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Literal["retried", "deferred", "failed"]  # the job_chunks metric's label
    error: dict[str, str]
    not_before: float | None = None  # retried or deferred: claimable again from then
    waiting: dict[str, Any] | None = None  # the job's `waiting` meanwhile


def error_of(exc: BaseException) -> dict[str, str]:
    """The error as a job's status shows it: {code, message}, written for the client."""
    if isinstance(exc, InfergateError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, TimeoutError):
        return {"code": "deadline_exceeded", "message": "the chunk did not finish in time"}
    if isinstance(exc, OSError):
        return {"code": "storage_error", "message": f"job storage: {exc.strerror or exc}"}
    return {"code": "internal_error", "message": "internal error"}


def unsupported(job: JobRow) -> dict[str, str]:
    return {
        "code": "task_not_supported",
        "message": f"{job.task} jobs are not supported yet (model {job.model!r})",
    }


def judge(exc: Exception, idx: int, attempts: int, max_attempts: int, now: float) -> Verdict:
    """`attempts`: the chunk's claims so far, this one included."""
    error = error_of(exc)
    if isinstance(exc, QuotaExceeded):  # an account's token quota: wait for its reset
        until = now + float(exc.retry_after or MAX_BACKOFF_S)
        return Verdict("deferred", error, until, {"reason": "token_quota", "until": until})
    if not isinstance(exc, RETRYABLE):
        return Verdict("failed", error)
    if attempts >= max_attempts:
        message = (
            f"chunk {idx} failed {attempts} times; the last: {error['code']}: {error['message']}"
        )
        return Verdict("failed", {"code": "chunk_failed", "message": message})
    until = now + min(MAX_BACKOFF_S, 2.0**attempts) * random.uniform(0.8, 1.2)
    reason = "model_unavailable" if isinstance(exc, ModelUnavailable) else "retrying"
    return Verdict("retried", error, until, {"reason": reason, "until": until})
