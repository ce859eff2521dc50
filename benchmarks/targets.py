"""What the benchmark measures: the servers it starts and how each is called.

All targets serve the same model (`intent` v1: MiniLM + the packaged LogisticRegression
head) with the same inputs; embeddings scenarios use `embed`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import free_port, with_parent_death_signal

TEXTS = [
    "please book a table for four people at eight",
    "what's my account balance",
    "I want to speak to a human agent right now, this is urgent",
    "how do I say thank you in japanese",
    "my card was declined at the store again and I am really annoyed about it",
    "set an alarm for 6 am tomorrow",
    "transfer 200 dollars from checking to savings",
    "what is the meaning of life",
    "can you tell me whether my flight to boston has been delayed",
    "cancel my subscription",
    "I've been waiting for a refund for three weeks and nobody answers my emails",
    "play some jazz",
]

Call = Callable[[int], Awaitable[None]]


@dataclass
class Target:
    name: str
    description: str
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    supports: set[str] = field(default_factory=lambda: {"single", "batch", "open"})
    headers: dict[str, str] = field(default_factory=dict)  # credentials, for the frontend
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # e.g. its Redis

    def stop(self) -> None:
        for proc in [self.process, *self.extra]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def start_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The servers die with the benchmark, even when it is killed.
    return subprocess.Popen(
        with_parent_death_signal([sys.executable, *args]),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


BENCH_ADMIN_KEY = "bench-admin-key-" + "0" * 32
# Limits far above what the run can reach (never a 429), in two windows like the real
# tiers, so that the limiter does its full work on every request.
BENCH_TIERS = {
    "free": {"rate": ["10/minute", "100/day"]},
    "unlimited": {"rate": []},
    "bench": {"rate": ["100000000/minute", "1000000000/day"]},
}
FRONTENDS = {
    "frontend": "(a) infergate frontend -> Triton, bootstrap admin key (no limiter), "
    "in-process state",
    "frontend_noauth": "(a') the frontend with authentication off (INFERGATE_AUTH__ENABLED=false)",
    "frontend_limits": "(a'') the frontend with an API key in a two-window tier, keys and "
    "limits in a private Redis (the full access-control path)",
}


def wait_redis(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Until the redis-server on `port` answers PING (or its process ends)."""
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        with_parent_death_signal(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_redis(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_frontend(
    triton_grpc: str, repository: Path, workers: int, name: str = "frontend"
) -> Target:
    import json

    port = free_port()
    env = {
        "INFERGATE_LOG__LEVEL": "WARNING",
        "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": BENCH_ADMIN_KEY,
        # One random secret for this run (shared by the workers), never a constant.
        "INFERGATE_SECRET_KEY": secrets.token_urlsafe(32),
    }
    extra: list[subprocess.Popen[bytes]] = []
    if name == "frontend_noauth":
        env["INFERGATE_AUTH__ENABLED"] = "false"
    if name == "frontend_limits":
        redis_proc, redis_url = start_redis()
        extra.append(redis_proc)
        env["INFERGATE_REDIS__URL"] = redis_url
        env["INFERGATE_AUTH__TIERS"] = json.dumps(BENCH_TIERS)
    proc = start_process(
        [
            "-m",
            "frontend",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--triton-url",
            triton_grpc,
            "--repository",
            str(repository),
        ],
        env=env,
    )
    target = Target(
        name,
        FRONTENDS[name].replace("->", f"({workers} worker) ->", 1),
        f"http://127.0.0.1:{port}",
        proc,
        {
            "frontend": {"single", "batch", "open", "embed", "cached"},
            "frontend_limits": {"single", "cached"},
        }.get(name, {"single"}),
        {"X-API-Key": BENCH_ADMIN_KEY},
        extra,
    )
    wait_http(target.url + "/health/ready")
    if name == "frontend_limits":
        made = httpx.post(
            target.url + "/v1/admin/keys",
            headers=target.headers,
            json={"name": "bench", "tier": "bench"},
            timeout=30,
        )
        made.raise_for_status()
        target.headers = {"X-API-Key": made.json()["key"]}
    return target


BASELINES = {
    "st_global": "(c) FastAPI + sentence-transformers global model in async def",
    "batching_queue": "(d) FastAPI + asyncio batching queue (32 / 50 ms), model offloaded",
    "ort_inprocess": "(e) FastAPI + in-process onnxruntime",
}


def start_baseline(name: str) -> Target:
    port = free_port()
    proc = start_process(
        ["-m", f"benchmarks.baselines.{name}", str(port)], env={"HF_HUB_OFFLINE": "1"}
    )
    target = Target(name, BASELINES[name], f"http://127.0.0.1:{port}", proc)
    wait_http(target.url + "/health")
    return target


class RestCaller:
    """aiohttp, not httpx: on a 2-core machine an httpx client tops out near 600 req/s
    against a trivial endpoint where aiohttp drives 6 300, so httpx would measure itself."""

    def __init__(self, target: Target, concurrency: int, cached: bool = False) -> None:
        self.target = target
        # The inference path is measured with the response cache bypassed (the inputs
        # repeat); the cache-hit scenario leaves it on.
        bypass = {} if cached else {"Cache-Control": "no-cache"}
        self.session = aiohttp.ClientSession(
            target.url,
            headers={**target.headers, **bypass},
            connector=aiohttp.TCPConnector(limit=max(concurrency, 1) * 2),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    def classify(self, batch: int) -> Call:
        path = (
            "/v1/models/intent/versions/1/predict"
            if self.target.name.startswith("frontend")
            else "/predict"
        )

        async def call(i: int) -> None:
            inputs: Any = (
                TEXTS[i % len(TEXTS)]
                if batch == 1
                else [TEXTS[(i + k) % len(TEXTS)] for k in range(batch)]
            )
            async with self.session.post(path, json={"inputs": inputs}) as response:
                await response.read()
                response.raise_for_status()

        return call

    def embed(self) -> Call:
        async def call(i: int) -> None:
            payload = {"model": "embed", "input": TEXTS[i % len(TEXTS)]}
            async with self.session.post("/v1/embeddings", json=payload) as response:
                await response.read()
                response.raise_for_status()

        return call

    async def close(self) -> None:
        await self.session.close()


class GrpcCaller:
    """Triton directly: raw text over gRPC, a few channels shared by the workers."""

    def __init__(self, url: str) -> None:
        self.clients = [grpcaio.InferenceServerClient(url) for _ in range(4)]

    def _call(self, model: str, version: str, batch: int, outputs: tuple[str, ...]) -> Call:
        requested = [grpcaio.InferRequestedOutput(o) for o in outputs]

        async def call(i: int) -> None:
            texts = [TEXTS[(i + k) % len(TEXTS)].encode() for k in range(batch)]
            array = np.array([[t] for t in texts], dtype=object)
            tensor = grpcaio.InferInput("TEXT", list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            await self.clients[i % len(self.clients)].infer(
                model, [tensor], model_version=version, outputs=requested, client_timeout=60
            )

        return call

    def classify(self, batch: int) -> Call:
        return self._call("intent", "1", batch, ("LABEL", "SCORE"))

    def embed(self) -> Call:
        return self._call("embed", "1", 1, ("EMBEDDING",))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
