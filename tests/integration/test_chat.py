"""Text generation end to end: the official `openai` client, unmodified, against the
frontend over the real embedded Triton and the exported SmolLM2; SSE framing, keep-alive,
limits, token quotas, and a client disconnect seen by the model (its own counters)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import httpx
import openai
import pytest

from procs.triton_metrics import counter, settled_counter
from procs.wait import wait_for

from .conftest import ADMIN, ADMIN_KEY, LiveFrontend, frontend_settings

pytestmark = pytest.mark.integration

USER = [{"role": "user", "content": "Write a short story about a robot."}]


@pytest.fixture(scope="module")
def tokenizer(repository):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(repository / "chat" / "1"))


@pytest.fixture(scope="module")
def live(triton, repository):
    """A frontend whose SSE keep-alive fires every 50 ms (so a test can see it) and with
    a tier whose daily token budget is small (quota tests)."""
    from frontend.app import create_app

    tiers = {
        "unlimited": {"rate": [], "tokens_per_day": None},
        "tiny": {"rate": [], "tokens_per_day": 1000},
    }
    auth = {"tiers": tiers, "default_tier": "tiny"}
    settings = frontend_settings(triton.grpc_url, repository, auth=auth)
    settings.generation.keepalive_s = 0.05
    server = LiveFrontend(create_app(settings))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oai(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key=ADMIN_KEY, max_retries=0)


def chat_prompt_tokens(tokenizer, messages) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def test_models_list_chat(live):
    data = httpx.get(live.url + "/v1/models", headers=ADMIN).json()["data"]
    chat = next(m for m in data if m["id"] == "chat")
    assert chat["task"] == "text-generation" and chat["ready"] is True


def test_chat_completion_usage_matches_the_tokenizer(oai, tokenizer):
    r = oai.chat.completions.create(model="chat", messages=USER, max_tokens=24, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason == "length" and choice.message.content.strip()
    assert r.usage.prompt_tokens == chat_prompt_tokens(tokenizer, USER)
    assert r.usage.completion_tokens == 24
    assert len(tokenizer(choice.message.content, add_special_tokens=False).input_ids) == 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + 24


def test_streaming_equals_non_streaming_when_greedy(oai, tokenizer):
    whole = oai.chat.completions.create(model="chat", messages=USER, max_tokens=30, temperature=0)
    chunks = list(
        oai.chat.completions.create(
            model="chat",
            messages=USER,
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30
    assert chunks[-1].usage.prompt_tokens == chat_prompt_tokens(tokenizer, USER)
    assert len({c.id for c in chunks}) == 1


def test_completions_usage_and_max_tokens(oai, tokenizer):
    prompt = "The three primary colours are"
    r = oai.completions.create(model="chat", prompt=prompt, max_tokens=7, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    assert r.usage.completion_tokens == 7
    streamed = oai.completions.create(
        model="chat", prompt=prompt, max_tokens=7, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_seed_reproduces_sampling(oai):
    def sample(seed: int) -> str:
        r = oai.chat.completions.create(
            model="chat", messages=USER, max_tokens=20, temperature=1.0, top_p=0.95, seed=seed
        )
        return r.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    assert sample(2**64 + 1234) == first  # any integer, taken modulo 2**63
    assert any(sample(seed) != first for seed in (1, 2, 3))


def test_stop_sequence_ends_the_text_before_it(oai):
    full = oai.chat.completions.create(model="chat", messages=USER, max_tokens=30, temperature=0)
    text = full.choices[0].message.content
    words = text.split()
    stop = " " + words[4]  # a sequence from the middle of the greedy answer
    cut = oai.chat.completions.create(
        model="chat", messages=USER, max_tokens=30, temperature=0, stop=[stop, "zzzz"]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    streamed = oai.chat.completions.create(
        model="chat", messages=USER, max_tokens=30, temperature=0, stop=stop, stream=True
    )
    # The stream never shows a piece of the stop sequence, even split across tokens.
    pieces = "".join(c.choices[0].delta.content or "" for c in streamed)
    assert pieces == cut.choices[0].message.content


def test_clear_errors(oai, live):
    with pytest.raises(openai.BadRequestError) as too_many:
        oai.chat.completions.create(model="chat", messages=USER, max_tokens=5000)
    assert "max_tokens" in str(too_many.value)
    with pytest.raises(openai.BadRequestError) as too_long:
        oai.completions.create(model="chat", prompt="word " * 3000, max_tokens=5)
    assert "prompt is" in str(too_long.value)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.NotFoundError):  # a classifier is not a generator
        oai.chat.completions.create(model="intent", messages=USER)
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "chat", "messages": USER, "n": 9},  # MAX_N is 8
    )
    # Invalid input on an OpenAI route is 400, as OpenAI answers it, naming the field.
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["param"] == "n"
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "chat", "messages": USER, "stop": ["a", "b", "c", "d", "e"]},
    )
    assert r.status_code == 400 and "stop" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "stop"


def sse_frames(body: str) -> list[tuple[str, str]]:
    """(event, data) per frame; comments as ("comment", text)."""
    frames = []
    for block in body.split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith(":"):
                frames.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            frames.append((event, "\n".join(data)))
    return frames


def test_sse_framing_and_keepalive(live):
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=ADMIN,
        json={"model": "chat", "messages": USER, "max_tokens": 25, "stream": True},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "\r\n" not in r.text  # plain `data: …\n\n` frames
    frames = sse_frames(r.text)
    assert ("comment", "ping") in frames  # keep-alive while tokens are produced
    data = [d for e, d in frames if e == "message"]
    assert data[-1] == "[DONE]"
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data[:-1])


def metric(triton, name: str) -> float:
    return counter(triton.metrics_url, name, "chat", "1")


def test_disconnect_after_three_tokens_cancels_the_model(live, triton):
    """docs/reliability.md, "stream disconnect": the gRPC stream is cancelled at once and the model
    stops within one decode step (its own counters say so); nothing stays active."""
    cancelled_before = settled_counter(
        triton.metrics_url, "infergate_chat_cancelled_total", "chat", "1"
    )

    async def read_three_then_leave() -> float:
        body = {"model": "chat", "messages": USER, "max_tokens": 1000, "stream": True}
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                live.url + "/v1/chat/completions", json=body, headers=ADMIN
            )
            tokens = 0
            async for line in response.content:
                content = line.startswith(b"data: {") and b'"content":"' in line
                if content and b'"content":""' not in line:
                    tokens += 1
                if tokens == 3:
                    break
            response.close()  # the client goes away mid-stream
            return time.monotonic()

    left = asyncio.run(read_three_then_leave())
    while metric(triton, "infergate_chat_cancelled_total") == cancelled_before:
        # A hang bound (the next decode step is test_chat_engine's claim); the time printed.
        assert time.monotonic() - left < 5.0, "the model did not see the cancellation in 5 s"
        time.sleep(0.01)
    seen_after = time.monotonic() - left
    generated = metric(triton, "infergate_chat_generated_tokens_total")
    time.sleep(0.3)  # several decode steps' worth: the counter must not move
    assert metric(triton, "infergate_chat_generated_tokens_total") == generated
    assert metric(triton, "infergate_chat_active_sequences") == 0
    text = httpx.get(live.url + "/metrics").text
    assert 'infergate_generation_active{model="chat"} 0.0' in text
    assert 'infergate_generations_total{model="chat",outcome="disconnected"}' in text
    print(f"model saw the disconnect {seen_after * 1000:.0f} ms after the client left")


def test_token_quota_reserves_and_settles(live):
    created = httpx.post(
        live.url + "/v1/admin/keys", headers=ADMIN, json={"name": "quota", "tier": "tiny"}
    ).json()
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=created["key"], max_retries=0)
    usage = lambda: httpx.get(  # noqa: E731
        live.url + "/v1/usage", headers={"X-API-Key": created["key"]}
    ).json()["tokens"]
    r = client.chat.completions.create(model="chat", messages=USER, max_tokens=10)
    assert usage()["used"] == r.usage.total_tokens  # settled to what was used
    # A disconnected stream is charged for what it generated before the client left.
    with client.chat.completions.create(
        model="chat", messages=USER, max_tokens=500, stream=True
    ) as stream:
        for i, _ in enumerate(stream):
            if i == 4:
                break
    deadline = time.monotonic() + 5
    while usage()["used"] > r.usage.total_tokens + 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    charged = usage()["used"] - r.usage.total_tokens
    assert r.usage.prompt_tokens < charged < r.usage.prompt_tokens + 20
    # 1000 a day: a request that could need more than what is left is refused up front.
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="chat", messages=USER, max_tokens=1024)
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    assert refused.value.body["code"] == "token_quota_exceeded"


def _chat_requests_seen(triton) -> float:
    """Every request Triton handed to the chat model, answered or refused by it."""
    return sum(
        settled_counter(triton.metrics_url, name, "chat", "1")
        for name in ("nv_inference_request_success", "nv_inference_request_failure")
    )


def test_oversized_prompt_is_refused_before_triton(live, triton):
    """Issue #11 item 7: a 1 MB chat body was tokenized by the model's single instance
    (1.4 s) before the model refused it. Now the frontend refuses a body over the
    generation routes' cap (413) and a prompt over the character cap (400) itself: Triton's
    counters for the chat model do not move. The control (a prompt under the character cap
    that the model refuses as too many tokens) shows that they would."""
    url = live.url
    before = _chat_requests_seen(triton)
    control = httpx.post(
        url + "/v1/completions",
        headers=ADMIN,
        json={"model": "chat", "prompt": "word " * 3000, "max_tokens": 5},
        timeout=60,
    )
    assert control.status_code == 400 and "prompt is" in control.json()["error"]["message"]
    wait_for(lambda: _chat_requests_seen(triton) == before + 1, "the control to be counted")
    seen = before + 1

    # What the review sent: ~1 MB in messages of 100 000 characters, or in one prompt;
    # and prompts under the body cap but over the character cap.
    many = [{"role": "user", "content": "x" * 100_000}] * 10
    over_chars = [
        {"role": "system", "content": "y" * 10_000},
        {"role": "user", "content": "y" * 7_000},
    ]
    refused = []
    for path, body, status, code in [
        ("/v1/chat/completions", {"model": "chat", "messages": many}, 413, "payload_too_large"),
        ("/v1/completions", {"model": "chat", "prompt": "z" * 1_000_000}, 413, "payload_too_large"),
        ("/v1/chat/completions", {"model": "chat", "messages": over_chars}, 400, "prompt_too_long"),
        ("/v1/completions", {"model": "chat", "prompt": "z" * 20_000}, 400, "prompt_too_long"),
    ]:
        started = time.monotonic()
        r = httpx.post(url + path, headers=ADMIN, json=body, timeout=60)
        refused.append(time.monotonic() - started)
        assert r.status_code == status, r.text[:300]
        assert r.json()["error"]["code"] == code
        assert _chat_requests_seen(triton) == seen, "the request reached the model"
    print("refused in " + ", ".join(f"{s * 1000:.0f} ms" for s in refused))
