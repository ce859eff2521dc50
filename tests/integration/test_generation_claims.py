"""Promises of docs/generation.md held by the real chat model (rows of docs/claims.md): the
config Triton serves, direct gRPC streaming and its errors, the model's own counters, the
end of the turn, token counts against the upstream tokenizer, and the frontend's
generation outcomes and limits over it. The shared Triton and frontend; few tokens each."""

from __future__ import annotations

import asyncio
import json
import queue
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from procs.triton_metrics import counter, model_gauge, settled_counter, wait_for

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
# Greedy, a long answer: it holds its slot for as long as the test needs.
STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
PROMPT = "The three primary colours are"
OUTPUTS = ("TEXT", "PROMPT_TOKENS", "COMPLETION_TOKENS", "FINISH_REASON")


@pytest.fixture(scope="module")
def upstream():
    """SmolLM2-135M-Instruct's tokenizer as the GGUF carries it (its vocabulary, merges and
    chat template), read by transformers itself, without the export's corrections."""
    from transformers import AutoTokenizer

    from export import sources
    from export.catalog import CHAT

    folder = str(sources.package_dir(CHAT.package))
    return AutoTokenizer.from_pretrained(folder, gguf_file=CHAT.gguf_file)


def tensors(**values: Any) -> list[grpcclient.InferInput]:
    """The chat model's inputs by name: str → BYTES, int → INT32 (SEED INT64), float → FP32,
    a list of str → a BYTES list (STOP)."""
    out = []
    for name, value in values.items():
        if isinstance(value, list):
            array, dtype = np.array([v.encode() for v in value], dtype=np.object_), "BYTES"
        elif isinstance(value, str):
            array, dtype = np.array([value.encode()], dtype=np.object_), "BYTES"
        elif isinstance(value, float):
            array, dtype = np.array([value], dtype=np.float32), "FP32"
        elif name == "SEED":
            array, dtype = np.array([value], dtype=np.int64), "INT64"
        else:
            array, dtype = np.array([value], dtype=np.int32), "INT32"
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _values(result: Any) -> dict[str, Any]:
    return {name: result.as_numpy(name)[0] for name in OUTPUTS}


def stream(client: grpcclient.InferenceServerClient, **inputs: Any) -> list[Any]:
    """One direct ModelStreamInfer call: every response's outputs, up to the one with a
    finish reason, or the final error's message (a str) last."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("chat", tensors(**inputs))
        seen: list[Any] = []
        while True:
            result, error = answers.get(timeout=120)
            if error is not None:
                return [*seen, error.message()]
            seen.append(_values(result))
            if seen[-1]["FINISH_REASON"]:
                return seen
    finally:
        client.stop_stream()


def metric(triton, name: str) -> float:
    return settled_counter(triton.metrics_url, name, "chat", "1")


def frontend_series(http: httpx.Client, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def _chat_requests_seen(triton) -> float:
    """Every request Triton handed to the chat model, answered or refused by it."""
    return sum(
        metric(triton, name)
        for name in ("nv_inference_request_success", "nv_inference_request_failure")
    )


# --- what Triton serves (generation.md › How it works) ---------------------------------


def test_the_served_chat_model_is_decoupled_with_one_cpu_instance(client, triton):
    answer = client.get_model_config("chat", headers=triton.grpc_admin_headers, as_json=True)
    config = answer["config"]
    assert config["backend"] == "python"
    assert config["model_transaction_policy"]["decoupled"] is True
    assert [(int(g["count"]), g["kind"]) for g in config["instance_group"]] == [(1, "KIND_CPU")]
    assert config["parameters"]["max_context"]["string_value"] == "2048"


# --- direct gRPC (generation.md › Internal services) -----------------------------------


def test_a_direct_grpc_prompt_streams_admission_then_tokens_then_the_finish(client, upstream):
    responses = stream(client, PROMPT=PROMPT, MAX_TOKENS=3, TEMPERATURE=0.0)
    first, *tokens, last = responses
    # The first response: the prompt counted, no text yet.
    assert first["TEXT"] == b"" and first["FINISH_REASON"] == b""
    assert first["COMPLETION_TOKENS"] == 0
    assert first["PROMPT_TOKENS"] == len(upstream(PROMPT, add_special_tokens=False).input_ids)
    # Then one per token, and the last one says why it ended.
    assert [t["COMPLETION_TOKENS"] for t in tokens] == [1, 2, 3]
    assert all(t["FINISH_REASON"] == b"" for t in tokens)
    assert last["FINISH_REASON"] == b"length" and last["COMPLETION_TOKENS"] == 3
    assert b"".join(t["TEXT"] for t in responses).strip()


def test_direct_grpc_errors_are_final_responses_named_by_their_kind(client, triton):
    invalid = [
        stream(client, MESSAGES=json.dumps(FRANCE), MAX_TOKENS=1025),  # the model's own limit
        stream(client, PROMPT=PROMPT, MESSAGES=json.dumps(FRANCE)),
        stream(client, PROMPT=PROMPT, TEMPERATURE=2.5),
        stream(client, PROMPT="word " * 3000, MAX_TOKENS=1),  # over 1 024 prompt tokens
    ]
    for answers in invalid:
        assert len(answers) == 1 and isinstance(answers[0], str), answers  # final, alone
        assert answers[0].startswith("invalid: "), answers[0]
    assert invalid[0][0] == "invalid: max_tokens must be 1..1024 (0 only with prompt logprobs)"

    # Overloaded: every slot and queue place held by direct streams, then one more.
    rejected_before = metric(triton, "infergate_chat_rejected_total")
    message = asyncio.run(_one_over_the_slots_and_queue(triton))
    assert message.startswith("overloaded: "), message
    assert metric(triton, "infergate_chat_rejected_total") == rejected_before + 1
    active = lambda: model_gauge(triton.metrics_url, "infergate_chat_active_sequences", "chat")  # noqa: E731
    queued = lambda: model_gauge(triton.metrics_url, "infergate_chat_queued_sequences", "chat")  # noqa: E731
    wait_for(lambda: active() == 0 and queued() == 0, "the cancelled streams to leave", 60)


async def _one_request(inputs: list[grpcclient.InferInput]) -> AsyncIterator[dict]:
    yield {"model_name": "chat", "inputs": inputs}


async def _one_over_the_slots_and_queue(triton) -> str:
    """Holds slots + queue (8 + 16) long streams, each admitted, then sends one more; its
    first response is the final error. The held streams are cancelled."""
    grpc = grpcaio.InferenceServerClient(triton.grpc_url)
    held = []
    try:
        for _ in range(8 + 16):
            inputs = tensors(MESSAGES=json.dumps(STORY), MAX_TOKENS=1000, TEMPERATURE=0.0)
            responses = grpc.stream_infer(_one_request(inputs), stream_timeout=120)
            held.append(responses)
            result, error = await anext(responses)  # admitted: in a slot or in the queue
            assert error is None, error
            assert int(result.as_numpy("PROMPT_TOKENS")[0]) > 0
        extra = grpc.stream_infer(_one_request(tensors(PROMPT=PROMPT, MAX_TOKENS=1)))
        result, error = await anext(extra)
        assert error is not None, "the model admitted a sequence beyond its slots and queue"
        return error.message()
    finally:
        for responses in held:
            responses.cancel()
        await grpc.close()


# --- the model's own counters (generation.md › Metrics) --------------------------------


async def _generate_together(triton, prompts: list[str], max_tokens: int) -> list[int]:
    """Streams the prompts at once over direct gRPC; the tokens each generated."""
    grpc = grpcaio.InferenceServerClient(triton.grpc_url)

    async def one(prompt: str) -> int:
        inputs = tensors(PROMPT=prompt, MAX_TOKENS=max_tokens, TEMPERATURE=0.0)
        async for result, error in grpc.stream_infer(_one_request(inputs), stream_timeout=120):
            assert error is None, error
            values = _values(result)
            if values["FINISH_REASON"]:
                return int(values["COMPLETION_TOKENS"])
        raise AssertionError("the stream ended without a finish reason")

    try:
        return list(await asyncio.gather(*(one(p) for p in prompts)))
    finally:
        await grpc.close()


def test_decode_rows_over_decode_steps_is_the_average_batch(triton):
    """Each sequence's first token comes from its prefill, every later one from one row of
    a decode step: rows = tokens sampled - sequences. Alone, each step has one row; two
    sequences together share steps, so there are fewer steps than rows."""
    names = (
        "infergate_chat_decode_steps_total",
        "infergate_chat_decode_rows_total",
        "infergate_chat_generated_tokens_total",
    )

    def counters() -> list[float]:
        return [metric(triton, name) for name in names]

    before = counters()
    asyncio.run(_generate_together(triton, [PROMPT], 12))
    alone = [b - a for a, b in zip(before, counters(), strict=True)]
    steps, rows, tokens = alone
    assert rows == tokens - 1 and steps == rows >= 1, alone

    before = counters()
    asyncio.run(_generate_together(triton, [PROMPT, "Once upon a time there was"], 16))
    together = [b - a for a, b in zip(before, counters(), strict=True)]
    steps, rows, tokens = together
    assert rows == tokens - 2, together
    assert steps < rows <= 2 * steps, together  # 1 < average batch <= 2
    # Sequences ended by an error are counted too (none here: the family is exported).
    assert counter(triton.metrics_url, "infergate_chat_failed_total", "chat", "1") >= 0


# --- the frontend over the real model (generation.md › Parameters, Answers, Metrics) ----


def test_the_turn_ends_at_its_end_token_counted_as_the_upstream_tokenizer_does(
    http, triton, upstream
):
    """A short greedy answer ends by itself: finish_reason stop before max_tokens, with no
    stop sequence; the model sampled one more token than it answered (the end of the
    turn, never shown). The prompt counts what the upstream tokenizer counts."""
    tokens_before = metric(triton, "infergate_chat_generated_tokens_total")
    r = http.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": FRANCE, "max_tokens": 32, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    choice, usage = answer["choices"][0], answer["usage"]
    assert choice["finish_reason"] == "stop" and usage["completion_tokens"] < 32
    assert "<|im_end|>" not in choice["message"]["content"]
    sampled = metric(triton, "infergate_chat_generated_tokens_total") - tokens_before
    assert sampled == usage["completion_tokens"] + 1
    assert usage["prompt_tokens"] == len(
        upstream.apply_chat_template(FRANCE, add_generation_prompt=True)
    )

    completion = http.post(
        "/v1/completions", json={"model": "chat", "prompt": PROMPT, "max_tokens": 1}
    ).json()
    plain = upstream(PROMPT, add_special_tokens=False).input_ids
    assert completion["usage"]["prompt_tokens"] == len(plain)
    # What the correction is for: the GGUF's own default puts a BOS before every text.
    assert upstream(PROMPT).input_ids == [upstream.bos_token_id, *plain]


def test_generation_outcomes_and_prompt_tokens_are_counted(http):
    def outcome(name: str) -> float:
        return frontend_series(
            http, f'infergate_generations_total{{model="chat",outcome="{name}"}}'
        )

    prompt_series = 'infergate_generation_tokens_total{kind="prompt",model="chat"}'
    before = {name: outcome(name) for name in ("stop", "length", "refused")}
    prompt_before = frontend_series(http, prompt_series)
    body = {"model": "chat", "messages": FRANCE, "temperature": 0}
    stopped = http.post("/v1/chat/completions", json={**body, "max_tokens": 32}).json()
    cut = http.post("/v1/chat/completions", json={**body, "max_tokens": 2}).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["finish_reason"] == "length"
    # Refused by the model itself (over 1 024 prompt tokens, under the character cap).
    refused = http.post(
        "/v1/completions", json={"model": "chat", "prompt": "word " * 3000, "max_tokens": 1}
    )
    assert refused.status_code == 400 and "prompt is" in refused.json()["error"]["message"]
    assert {name: outcome(name) - before[name] for name in before} == {
        "stop": 1,
        "length": 1,
        "refused": 1,
    }
    counted = frontend_series(http, prompt_series) - prompt_before
    assert counted == stopped["usage"]["prompt_tokens"] + cut["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("/v1/chat/completions", "max_tokens"),
        ("/v1/chat/completions", "max_completion_tokens"),
        ("/v1/completions", "max_tokens"),
    ],
)
def test_max_tokens_1024_is_served_and_1025_refused_before_the_model(http, triton, route, field):
    body: dict[str, Any] = {"model": "chat", "temperature": 0, "stop": [" "]}
    body.update({"messages": FRANCE} if route == "/v1/chat/completions" else {"prompt": PROMPT})
    # The stop sequence ends it within a few tokens: 1 024 is admitted by both sides.
    ok = http.post(route, json={**body, field: 1024})
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["finish_reason"] == "stop"
    seen = _chat_requests_seen(triton)
    refused = http.post(route, json={**body, field: 1025})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "bad_request" and "1 to 1024" in error["message"]
    assert _chat_requests_seen(triton) == seen
