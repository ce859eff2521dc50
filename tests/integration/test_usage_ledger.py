"""The usage ledger end to end, on SQLite and PostgreSQL: the real frontend over the
session's Triton counts what its callers used, its writer puts exactly that in the
database, the admin report and the caller's own `/v1/usage` read it back; and what was
counted before the stop signal is written at shutdown, none of it lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs.wait import wait_for

from .conftest import ADMIN, LiveFrontend, frontend_settings

pytestmark = pytest.mark.integration

N = 12
TEXTS = ["I want my money back", "hello there"]
CHAT = [{"role": "user", "content": "Say hello."}]


@contextmanager
def _frontend(triton, repository: Path, url: str, flush_s: float) -> Iterator[httpx.Client]:
    """A frontend over `url` (schema upgraded at start-up), its cache on (hits to count)."""
    from frontend.app import create_app
    from frontend.settings import DatabaseSettings

    settings = frontend_settings(triton.grpc_url, repository, cache={"enabled": True})
    database = DatabaseSettings(url=url, usage_flush_s=flush_s)
    settings = settings.model_copy(update={"database": database})
    live = LiveFrontend(create_app(settings))
    try:
        with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as client:
            yield client
    finally:
        live.stop()  # what SIGTERM does: uvicorn's graceful exit, then the lifespan's end


def _new_key(http: httpx.Client) -> dict[str, Any]:
    r = http.post("/v1/admin/keys", json={"name": "ledger", "tier": "unlimited"})
    assert r.status_code == 201, r.text
    return r.json()


def _mine(http: httpx.Client, key: dict[str, Any]) -> dict[str, Any] | None:
    """The key's one group in the admin report (None before its usage is written)."""
    r = http.get("/v1/admin/usage", params={"group_by": "subject", "key": key["id"]})
    assert r.status_code == 200, r.text
    groups = r.json()["data"]
    assert len(groups) <= 1
    return groups[0] if groups else None


def _predict_n(http: httpx.Client, key: dict[str, Any]) -> None:
    for _ in range(N):  # the same texts each time: all but the first are cache hits
        r = http.post(
            "/v1/models/intent/predict", json={"inputs": TEXTS}, headers={"X-API-Key": key["key"]}
        )
        assert r.status_code == 200, r.text


def _chat_twice(http: httpx.Client, key: dict[str, Any]) -> list[dict[str, int]]:
    """One chat completion whole and one streamed; the usage each reported."""
    caller = {"X-API-Key": key["key"]}
    body = {"model": "chat", "messages": CHAT, "max_tokens": 8, "temperature": 0}
    whole = http.post("/v1/chat/completions", json=body, headers=caller)
    assert whole.status_code == 200, whole.text
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=streamed, headers=caller) as r:
        assert r.status_code == 200
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    return [whole.json()["usage"], json.loads(frames[-1])["usage"]]


def test_the_ledger_writes_exactly_what_was_used(triton, repository, database_url):
    with _frontend(triton, repository, database_url, flush_s=1.0) as http:
        predictor, chatter = _new_key(http), _new_key(http)
        _predict_n(http, predictor)
        usages = _chat_twice(http, chatter)
        # Written by the ledger's own loop, within a second or so.
        wait_for(
            lambda: (
                (_mine(http, predictor) or {}).get("requests", 0) >= N
                and (_mine(http, chatter) or {}).get("requests", 0) >= 2
            ),
            "the ledger's write",
            30,
            interval_s=0.2,
        )
        subject = f"key:{predictor['id']}"
        assert _mine(http, predictor) == {
            "subject": subject,
            "account": subject,
            "requests": N,
            "items": N * len(TEXTS),
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cache_hits": (N - 1) * len(TEXTS),
            "errors": 0,
        }
        chat = _mine(http, chatter)
        assert chat is not None
        assert (chat["requests"], chat["items"], chat["errors"]) == (2, 2, 0)
        assert chat["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages) > 0
        assert chat["completion_tokens"] == sum(u["completion_tokens"] for u in usages) > 0
        # The caller's own view: its account's ledger, the same sums.
        own = http.get(
            "/v1/usage", params={"group_by": "model"}, headers={"X-API-Key": predictor["key"]}
        )
        assert own.status_code == 200, own.text
        groups = own.json()["ledger"]["data"]
        assert [g["model"] for g in groups] == ["intent"]
        assert sum(g["requests"] for g in groups) == N
        assert sum(g["cache_hits"] for g in groups) == (N - 1) * len(TEXTS)


def test_what_was_counted_before_the_stop_is_written_at_shutdown(triton, repository, database_url):
    # The writer's interval is a minute: only the shutdown's write can put it there.
    with _frontend(triton, repository, database_url, flush_s=60) as http:
        key = _new_key(http)
        _predict_n(http, key)
        assert _mine(http, key) is None  # counted, not yet written
    with _frontend(triton, repository, database_url, flush_s=60) as http:
        mine = _mine(http, key)
        assert mine is not None
        assert (mine["requests"], mine["items"]) == (N, N * len(TEXTS))
