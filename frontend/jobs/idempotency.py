"""Idempotency-Key for job submissions, with Stripe's semantics (design §6).

Per (owner, key), a primary key: of concurrent twins exactly one claim wins and goes on;
the others get 409 idempotency_in_progress (Retry-After: 1). Once the winner made its
job the key is done: the same request again is answered 200 with that job and
`Idempotent-Replayed: true`, another request with the same key 409
idempotency_key_reused. A submission that fails keeps nothing (the claim is dropped), so
a corrected retry with the same key proceeds.

The request hash: a JSON body's canonical JSON (sorted keys) and the path; a multipart
body's fields (sorted) and each file's (name, sha256) in order, known only after the
body has been read."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..db import jobs
from ..db.database import Database
from ..db.jobs import IdemClaim
from ..errors import DatabaseUnavailable, IdempotencyInProgress, IdempotencyKeyReused, InputInvalid
from ..job_settings import JobSettings

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255


def parse_key(value: str | None) -> str | None:
    """The header's key (None: none sent); 422 unless 1 … 255 printable ASCII."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY or not all(" " <= ch <= "~" for ch in value):
        raise InputInvalid(
            f"{HEADER}: must be 1 to {MAX_KEY} printable ASCII characters",
            [{"loc": ["header", HEADER], "msg": "1 to 255 printable ASCII characters"}],
            param=HEADER,
        )
    return value


def json_hash(body: Mapping[str, Any], path: str) -> str:
    canonical = orjson.dumps(dict(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(path.encode() + b"\n" + canonical).hexdigest()


def upload_hash(fields: Mapping[str, str], files: Sequence[tuple[str, str]]) -> str:
    """`files`: each file's (name, sha256 hex), in upload order."""
    canonical = orjson.dumps(
        {"fields": dict(fields), "files": [list(f) for f in files]}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(b"multipart\n" + canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this submission holds (outcome "claimed"), or a done one whose hash is
    compared once the body is read ("done"), or a replay ("replay", `job_id`)."""

    owner: str
    key: str
    outcome: str
    job_id: str | None
    request_hash: str | None
    claimed_at: float | None

    @property
    def held(self) -> bool:
        return self.outcome == "claimed"


def _refuse(found: IdemClaim) -> None:
    if found.outcome == "in_progress":
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            param=HEADER,
        )
    if found.outcome == "reused":
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", param=HEADER
        )


async def claim(
    database: Database,
    owner: str,
    key: str,
    request_hash: str | None,
    now: float,
    settings: JobSettings,
) -> Claim:
    """Takes the key for this request, or raises the 409 its state calls for.
    `request_hash` None: not known yet (multipart)."""
    found = await database.run(
        "jobs.idempotency_claim",
        lambda s: jobs.claim_idempotency(
            s,
            owner,
            key,
            request_hash,
            now,
            float(settings.idempotency_ttl_s),
            settings.idempotency_stale_s,
        ),
    )
    _refuse(found)
    return Claim(owner, key, found.outcome, found.job_id, found.request_hash, found.created_at)


def check_done(claim: Claim, request_hash: str) -> None:
    """A done key met before its request's hash was known: 409 unless it is the same."""
    if claim.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", param=HEADER
        )


async def drop(database: Database, claim: Claim | None) -> None:
    """Frees a key this submission held (it failed). Shielded: it runs when the request
    is cancelled too; an outage leaves the key to go stale (jobs.idempotency_stale_s)."""
    if claim is None or not claim.held:
        return

    async def free() -> None:
        with contextlib.suppress(DatabaseUnavailable):
            await database.run(
                "jobs.idempotency_drop",
                lambda s: jobs.drop_idempotency(
                    s, claim.owner, claim.key, claimed_at=claim.claimed_at
                ),
            )

    await asyncio.shield(free())
