"""A first side-by-side measurement: `intent` v1 at fixed concurrency through the frontend
(REST) and directly to Triton (gRPC, raw text), interleaved in one run.

    .venv/bin/python -m benchmarks.frontend_vs_triton --seconds 15 --rounds 2 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import EmbeddedTriton, TritonPorts, free_port

from .loadgen import closed_loop
from .triton_topology import TEXTS


async def _direct(url: str, concurrency: int, seconds: float) -> dict:
    clients = [grpcaio.InferenceServerClient(url) for _ in range(4)]

    async def call(i: int) -> None:
        array = np.array([[TEXTS[i % len(TEXTS)].encode()]], dtype=object)
        tensor = grpcaio.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(array)
        await clients[i % 4].infer(
            "intent",
            [tensor],
            model_version="1",
            client_timeout=30,
            outputs=[grpcaio.InferRequestedOutput("LABEL"), grpcaio.InferRequestedOutput("SCORE")],
        )

    result = await closed_loop(call, concurrency, seconds)
    for c in clients:
        await c.close()
    return result.summary()


async def _frontend(url: str, concurrency: int, seconds: float) -> dict:
    # aiohttp, not httpx: on this 2-core machine an httpx client tops out near 600 req/s
    # against a trivial endpoint where aiohttp drives 6 300, so httpx would measure itself.
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def call(i: int) -> None:
            payload = {"inputs": TEXTS[i % len(TEXTS)]}
            async with session.post("/v1/models/intent/versions/1/predict", json=payload) as r:
                await r.read()
                r.raise_for_status()

        return (await closed_loop(call, concurrency, seconds)).summary()


def _start_frontend(triton_url: str, repository: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "INFERGATE_LOG__LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frontend",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--triton-url",
            triton_url,
            "--repository",
            repository,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("frontend did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    ports = TritonPorts(grpc=free_port(), http=free_port(), metrics=free_port())
    rows: list[dict] = []
    with EmbeddedTriton(Path(args.repository), ports).start(180) as triton:
        proc, url = _start_frontend(triton.grpc_url, args.repository, args.workers)
        targets = {
            "triton_direct_grpc": lambda s: _direct(triton.grpc_url, args.concurrency, s),
            "frontend_rest": lambda s: _frontend(url, args.concurrency, s),
        }
        try:
            for run in targets.values():
                asyncio.run(run(3))  # warm-up
            for round_ in range(args.rounds):
                for name, run in targets.items():
                    row = {"target": name, "round": round_, **asyncio.run(run(args.seconds))}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            proc.terminate()
            proc.wait(30)

    def best(name: str) -> dict:
        return max((r for r in rows if r["target"] == name), key=lambda r: r["rps"])

    direct, front = best("triton_direct_grpc"), best("frontend_rest")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "concurrency": args.concurrency,
        "frontend_workers": args.workers,
        "rows": rows,
        "frontend_over_direct_rps": round(front["rps"] / direct["rps"], 3),
        "frontend_over_direct_p99": round(front["p99_ms"] / direct["p99_ms"], 3),
    }
    out = Path(args.out) / time.strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontend_vs_triton.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))


if __name__ == "__main__":
    main()
