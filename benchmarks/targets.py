"""What the benchmark measures: the servers it starts and how each is called.

All targets serve the same model (`intent` v1: MiniLM + the packaged LogisticRegression
head) with the same inputs; embeddings scenarios use `embed`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from procs.ports import free_port
from procs.process import start_python
from procs.process import stop as stop_process
from procs.redis_server import start_redis
from procs.wait import wait_http

from .inputs import TEXTS

Call = Callable[[int], Awaitable[None]]


@dataclass
class Target:
    name: str
    description: str
    _: KW_ONLY
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    supports: set[str] = field(default_factory=lambda: {"single", "batch", "open"})
    headers: dict[str, str] = field(default_factory=dict)  # credentials, for the frontend
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # e.g. its Redis
    scratch: Path | None = None  # a directory of its own (its database), removed at stop

    def wait_ready(self, route: str) -> None:
        """Until it answers 200 on `route` (at once an error if its process exits); if it
        never does, stop what it started (its Redis too) before the error goes up."""
        try:
            wait_http(self.url + route, proc=self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in [self.process, *self.extra]:
            if proc is not None:
                stop_process(proc)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def scratch_database() -> tuple[Path, str]:
    """A fresh directory for one server of one run and the URL of a SQLite database in
    it: a benchmark never writes the checkout's `.infergate/` nor reuses an old run's
    records."""
    directory = Path(tempfile.mkdtemp(prefix="infergate-bench-"))
    return directory, f"sqlite+aiosqlite:///{directory / 'infergate.db'}"


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
    "frontend_limits": "(a'') the frontend with an API key in a two-window tier: keys in SQL, "
    "limits in a private Redis (the full access-control path)",
}


def start_frontend(
    triton_grpc: str,
    repository: Path,
    workers: int,
    name: str = "frontend",
    *,
    triton_admin_key: str | None = None,
    source: Path | None = None,
    env_extra: dict[str, str] | None = None,
    label: str | None = None,
) -> Target:
    """One frontend (`python -m frontend serve`) over the given Triton, ready; it dies
    with the benchmark, even when the benchmark is killed. `triton_admin_key`: the
    launch's key of Triton's restricted APIs, so that /v1/models can show versions.
    `source`: run the frontend of another checkout (a git worktree of an older commit:
    `python -m frontend` from its directory imports its code); `env_extra`: settings on
    top; `label`: the target's name in results (default `name`)."""
    port = free_port()
    scratch, database_url = scratch_database()
    env = {
        "INFERGATE_LOG__LEVEL": "WARNING",
        "INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY": BENCH_ADMIN_KEY,
        # One random secret for this run (shared by the workers), never a constant.
        "INFERGATE_SECRET_KEY": secrets.token_urlsafe(32),
        "INFERGATE_DATABASE__URL": database_url,
    }
    if triton_admin_key is not None:
        env["INFERGATE_TRITON__ADMIN_KEY"] = triton_admin_key
    extra: list[subprocess.Popen[bytes]] = []
    if name == "frontend_noauth":
        env["INFERGATE_AUTH__ENABLED"] = "false"
    env.update(env_extra or {})
    if name == "frontend_limits":
        redis_proc, redis_url = start_redis()
        extra.append(redis_proc)
        env["INFERGATE_REDIS__URL"] = redis_url
        env["INFERGATE_AUTH__TIERS"] = json.dumps(BENCH_TIERS)
    proc = start_python(
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
            str(repository.resolve()),
        ],
        env=env,
        cwd=source,
    )
    target = Target(
        label or name,
        FRONTENDS[name].replace("->", f"({workers} worker) ->", 1)
        + (f" [{label}]" if label else ""),
        url=f"http://127.0.0.1:{port}",
        process=proc,
        supports={
            "frontend": {"single", "batch", "open", "embed", "cached"},
            "frontend_limits": {"single", "cached"},
        }.get(name, {"single"}),
        headers={"X-API-Key": BENCH_ADMIN_KEY},
        extra=extra,
        scratch=scratch,
    )
    target.wait_ready("/health/ready")
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
    proc = start_python(
        ["-m", f"benchmarks.baselines.{name}", str(port)], env={"HF_HUB_OFFLINE": "1"}
    )
    target = Target(name, BASELINES[name], url=f"http://127.0.0.1:{port}", process=proc)
    target.wait_ready("/health")
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
