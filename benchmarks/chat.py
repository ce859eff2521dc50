"""`make bench-chat`: text generation, side by side in one run.

    python -m benchmarks.chat [--tokens 64] [--rounds 2]

- single stream: tokens/s and time to first token through the frontend (SSE) and
  directly over Triton gRPC (the decoupled model), interleaved round by round;
- aggregate tokens/s at 1, 4 and 8 concurrent streams through the frontend (in-flight
  batching: the goal is >= 3x the single-stream rate at 8 streams), and the average
  number of sequences per decode step from the model's own counters.

Greedy, a fixed max_tokens, prompts that do not stop early, so every stream generates
the same number of tokens. Writes benchmarks/reports/<date>_<time>-chat/{results.json,
report.md, chat.png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import EmbeddedTriton, TritonPorts
from frontend.triton.generate import GenerationParams, request_inputs

from . import chat_report
from .machine import machine
from .targets import BENCH_ADMIN_KEY, start_frontend

PROMPTS = [
    "Write a long story about a robot who learns to paint.",
    "Explain in detail how a steam engine works.",
    "Describe the history of the printing press.",
    "Write a detailed guide to growing tomatoes at home.",
    "Explain how the internet routes a message from one computer to another.",
    "Describe a day in the life of a lighthouse keeper.",
    "Write an essay about the importance of sleep.",
    "Explain how vaccines train the immune system.",
]


def _summary(ttfts: list[float], rates: list[float]) -> dict[str, float]:
    return {
        "ttft_ms_median": round(statistics.median(ttfts) * 1000, 1),
        "tokens_per_s_median": round(statistics.median(rates), 2),
        "n": len(rates),
    }


async def frontend_stream(url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, tokens/s after the first, tokens) for one SSE stream."""
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"X-API-Key": BENCH_ADMIN_KEY}
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session,
        session.post(url + "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    ttft = first - started
    return ttft, (count - 1) / max(last - first, 1e-9), count


async def grpc_stream(url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    client = grpcaio.InferenceServerClient(url)
    messages = json.dumps([{"role": "user", "content": prompt}])
    greedy = GenerationParams(
        max_tokens=tokens, temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=()
    )
    inputs = request_inputs(None, messages, greedy)

    async def one() -> Any:
        yield {"model_name": "chat", "inputs": inputs}

    started = time.perf_counter()
    first = last = 0.0
    count = 0
    try:
        async for result, error in client.stream_infer(one(), stream_timeout=600):
            assert error is None, error
            done = result.as_numpy("FINISH_REASON")[0]
            count = int(result.as_numpy("COMPLETION_TOKENS")[0])
            if count and not done:
                last = time.perf_counter()
                first = first or last
            if done:
                break
    finally:
        await client.close()
    return first - started, (count - 1) / max(last - first, 1e-9), count


def _chat_counters(metrics_url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        for name in ("infergate_chat_decode_steps_total", "infergate_chat_decode_rows_total"):
            if line.startswith(name + "{"):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values["infergate_chat_decode_steps_total"], values["infergate_chat_decode_rows_total"]


async def concurrent(url: str, streams: int, tokens: int, metrics_url: str) -> dict[str, Any]:
    steps0, rows0 = _chat_counters(metrics_url)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(frontend_stream(url, PROMPTS[i % len(PROMPTS)], tokens) for i in range(streams))
    )
    elapsed = time.perf_counter() - started
    steps1, rows1 = _chat_counters(metrics_url)
    total = sum(r[2] for r in results)
    return {
        "streams": streams,
        "tokens": total,
        "seconds": round(elapsed, 2),
        "aggregate_tokens_per_s": round(total / elapsed, 2),
        "ttft_ms_median": round(statistics.median(r[0] for r in results) * 1000, 1),
        "sequences_per_decode_step": round((rows1 - rows0) / max(steps1 - steps0, 1), 2),
    }


async def run(frontend_url: str, grpc_url: str, metrics_url: str, args: Any) -> dict[str, Any]:
    await frontend_stream(frontend_url, PROMPTS[0], 8)  # warm both paths
    await grpc_stream(grpc_url, PROMPTS[0], 8)
    single: dict[str, dict[str, list[float]]] = {
        "frontend": {"ttft": [], "rate": []},
        "triton_grpc": {"ttft": [], "rate": []},
    }
    for _ in range(args.rounds):
        for i, prompt in enumerate(PROMPTS[: getattr(args, "single_prompts", 4)]):
            order = ("frontend", "triton_grpc") if i % 2 == 0 else ("triton_grpc", "frontend")
            for path in order:
                call = frontend_stream if path == "frontend" else grpc_stream
                url = frontend_url if path == "frontend" else grpc_url
                ttft, rate, _ = await call(url, prompt, args.tokens)
                single[path]["ttft"].append(ttft)
                single[path]["rate"].append(rate)
    levels = []
    for streams in (1, 4, 8):
        runs = [
            await concurrent(frontend_url, streams, args.tokens, metrics_url)
            for _ in range(args.rounds)
        ]
        levels.append(max(runs, key=lambda r: r["aggregate_tokens_per_s"]))
    one = levels[0]["aggregate_tokens_per_s"]
    eight = levels[-1]["aggregate_tokens_per_s"]
    return {
        "tokens_per_stream": args.tokens,
        "single_stream": {k: _summary(v["ttft"], v["rate"]) for k, v in single.items()},
        "concurrency": levels,
        "goal": {
            "name": "aggregate tokens/s at 8 streams >= 3x 1 stream",
            "ratio": round(eight / one, 2),
            "met": eight >= 3 * one,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--out", default="benchmarks/reports")
    args = parser.parse_args()
    repository = Path(args.repository).resolve()
    with EmbeddedTriton(repository, TritonPorts.free()) as triton:
        target = start_frontend(
            triton.grpc_url, repository, workers=1, triton_admin_key=triton.admin_key
        )
        try:
            results = asyncio.run(run(target.url, triton.grpc_url, triton.metrics_url, args))
        finally:
            target.stop()
    results["machine"] = machine()
    out = Path(args.out) / (time.strftime("%Y-%m-%d_%H%M%S") + "-chat")
    chat_report.write(out, results)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
