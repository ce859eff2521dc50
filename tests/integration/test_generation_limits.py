"""Text generation at the real model's own bounds and with its own metrics: the slots and
queue the card declares (8 + 16), TTFT / inter-token / decode metrics, and readiness that
says `degraded` when only an optional part is down. The shared Triton and frontend."""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import aiohttp
import httpx
import pytest

from procs.triton_metrics import model_gauge, settled_counter, wait_for

from .conftest import ADMIN, LiveFrontend, free_port, frontend_settings

pytestmark = pytest.mark.integration

USER = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


def _histogram(text: str, name: str, model: str) -> tuple[float, float]:
    """(count, sum) of a frontend histogram for one model."""

    def value(suffix: str) -> float:
        found = re.search(rf'^{name}_{suffix}{{model="{model}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    return value("count"), value("sum")


def _sample(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_slots_and_queue_hold_at_the_cards_real_size(triton, frontend, repository):
    """Fill every slot and queue place the card declares with long streams, then every
    further request is refused at once with 503 overloaded; cancelling the streams frees
    the model."""
    card = json.loads((repository / "chat" / "1" / "card.json").read_text())
    slots, queue = card["slots"], card["queue"]
    assert (slots, queue) == (8, 16)  # the figures the docs give
    metrics = triton.metrics_url
    active = lambda: model_gauge(metrics, "infergate_chat_active_sequences", "chat")  # noqa: E731
    queued = lambda: model_gauge(metrics, "infergate_chat_queued_sequences", "chat")  # noqa: E731
    wait_for(lambda: active() == 0 and queued() == 0, "an idle chat model", 60)
    url = frontend.url + "/v1/chat/completions"
    long_body = {"model": "chat", "messages": USER, "max_tokens": 1000, "stream": True}

    async def hold(session: aiohttp.ClientSession, started: asyncio.Event) -> int:
        async with session.post(url, json=long_body, headers=ADMIN) as r:
            started.set()
            await asyncio.sleep(3600)  # cancelled by the test
            return r.status

    async def scenario() -> list[tuple[int, str, str | None]]:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            events = [asyncio.Event() for _ in range(slots + queue)]
            holders = [asyncio.create_task(hold(session, e)) for e in events]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None,
                lambda: wait_for(
                    lambda: active() == slots and queued() == queue,
                    f"{slots} generating and {queue} queued",
                    60,
                ),
            )
            extra = []
            short = {"model": "chat", "messages": USER, "max_tokens": 5}
            for _ in range(3):
                async with session.post(url, json=short, headers=ADMIN) as r:
                    extra.append((r.status, await r.text(), r.headers.get("Retry-After")))
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            return extra

    refused = asyncio.run(scenario())
    for status, body, retry_after in refused:
        assert status == 503, body
        assert json.loads(body)["error"]["code"] == "overloaded"
        assert retry_after is not None and int(retry_after) >= 1
    # The cancelled streams leave the model: nothing generating, nothing waiting.
    wait_for(lambda: active() == 0 and queued() == 0, "the cancelled streams to leave", 30)


def test_generation_metrics_time_to_first_token_inter_token_and_decode(
    triton, frontend, repository
):
    metrics = frontend.url + "/metrics"
    before = httpx.get(metrics).text
    steps = lambda: settled_counter(  # noqa: E731
        triton.metrics_url, "infergate_chat_decode_steps_total", "chat", "1"
    )
    tokens = lambda: settled_counter(  # noqa: E731
        triton.metrics_url, "infergate_chat_generated_tokens_total", "chat", "1"
    )
    steps_before, tokens_before = steps(), tokens()
    body = {"model": "chat", "messages": USER, "max_tokens": 12, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with httpx.stream(
        "POST", frontend.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=60
    ) as r:
        assert r.status_code == 200
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    usage = json.loads(frames[-2])["usage"]
    generated = usage["completion_tokens"]
    assert generated >= 2
    after = httpx.get(metrics).text
    ttft = "infergate_generation_time_to_first_token_seconds"
    ttft_n0, ttft_s0 = _histogram(before, ttft, "chat")
    ttft_n1, ttft_s1 = _histogram(after, ttft, "chat")
    itl_n0, itl_s0 = _histogram(before, "infergate_generation_inter_token_seconds", "chat")
    itl_n1, itl_s1 = _histogram(after, "infergate_generation_inter_token_seconds", "chat")
    assert ttft_n1 - ttft_n0 == 1 and ttft_s1 > ttft_s0
    # One observation per response that carried new tokens, after the first.
    assert 1 <= itl_n1 - itl_n0 <= generated - 1
    assert itl_s1 > itl_s0
    completion = 'infergate_generation_tokens_total{kind="completion",model="chat"}'
    assert _sample(after, completion) - _sample(before, completion) == generated
    # The model's own counters on Triton's metrics port: one token sampled per decode row.
    assert tokens() - tokens_before >= generated
    assert steps() - steps_before >= generated - 1


def _ready(live: LiveFrontend) -> tuple[int, dict]:
    r = httpx.get(live.url + "/health/ready", timeout=10)
    return r.status_code, r.json()


def test_readiness_is_degraded_when_only_an_optional_part_is_down(triton, repository, tmp_path):
    """A fail-open Redis that is down, and a model the frontend knows but Triton does not
    serve while only another model is required: 200 `degraded`, naming the parts down.
    With every model required, the same missing model makes it 503 not_ready."""
    from frontend.app import create_app

    cards = tmp_path / "repo"
    for card in repository.glob("*/*/card.json"):
        target = cards / card.parent.parent.name / card.parent.name
        target.mkdir(parents=True)
        shutil.copy(card, target / "card.json")
    ghost = json.loads((repository / "sentiment" / "1" / "card.json").read_text())
    ghost["model"] = "ghost"
    (cards / "ghost" / "1").mkdir(parents=True)
    (cards / "ghost" / "1" / "card.json").write_text(json.dumps(ghost))
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"

    settings = frontend_settings(
        triton.grpc_url, cards, redis_url=dead_redis, required_models=["sentiment"]
    )
    settings.auth.redis_failure_policy = "open"
    live = LiveFrontend(create_app(settings))
    try:
        status, body = _ready(live)
    finally:
        live.stop()
    assert status == 200, body
    assert body["status"] == "degraded"
    parts = body["components"]
    assert parts["redis"]["status"] == "down" and parts["redis"]["required"] is False
    assert parts["model:ghost"]["status"] == "down" and parts["model:ghost"]["required"] is False
    assert parts["model:sentiment"]["status"] == "up" and parts["model:sentiment"]["required"]

    every = frontend_settings(triton.grpc_url, cards)  # no required list: every model is
    live = LiveFrontend(create_app(every))
    try:
        status, body = _ready(live)
    finally:
        live.stop()
    assert status == 503 and body["status"] == "not_ready"
    assert body["components"]["model:ghost"]["required"] is True
