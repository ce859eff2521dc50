"""Starts of the embedded Triton, each met by a chat request the moment it is ready.

    python -m benchmarks.triton_starts [--starts 12]

Counts the starts after which Triton died (its process gone, or
`boost::interprocess::lock_exception` in its log). It measured the python-backend crash
that the chat model's old readiness watch (`pb_utils.is_model_ready` from a second thread)
caused: 4 of 12 starts before, 0 of 12 with the HTTP probe (export/runtime/server_watch.py).
About 6 s per start here. Prints the count; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import tritonclient.grpc.aio as grpcaio

from export.triton_launcher import EmbeddedTriton
from frontend.triton.generate import GenerationParams, request_inputs


async def first_request(url: str) -> None:
    client = grpcaio.InferenceServerClient(url)
    params = GenerationParams(max_tokens=4, temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=())
    inputs = request_inputs(None, json.dumps([{"role": "user", "content": "Hi"}]), params)

    async def one() -> object:
        yield {"model_name": "chat", "model_version": "1", "inputs": inputs, "request_id": "1"}

    try:
        async for result, error in client.stream_infer(one(), stream_timeout=60):
            if error is not None:
                raise RuntimeError(str(error))
            if result.as_numpy("FINISH_REASON")[0]:
                return
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--starts", type=int, default=12)
    args = parser.parse_args()
    died = 0
    for i in range(args.starts):
        server = EmbeddedTriton(args.repository).start(300)
        try:
            try:
                asyncio.run(first_request(server.grpc_url))
                time.sleep(0.5)
                alive = server.process is not None and server.process.poll() is None
            except Exception as exc:
                print(f"start {i + 1}: {exc!r:.200}")
                alive = False
            alive = alive and not any("lock_exception" in line for line in server.log_tail)
        finally:
            server.stop()
        died += not alive
        print(f"start {i + 1}: {'answered' if alive else 'Triton died'}", flush=True)
    print(f"Triton died after {died} of {args.starts} starts")


if __name__ == "__main__":
    main()
