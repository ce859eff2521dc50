"""Dynamic batching forms batches under concurrency (read from Triton's metrics)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio

from procs.triton_metrics import settled_counter

pytestmark = pytest.mark.integration


def _counters(metrics_url: str, model: str, version: str) -> tuple[float, float]:
    return (
        settled_counter(metrics_url, "nv_inference_count", model, version),
        settled_counter(metrics_url, "nv_inference_exec_count", model, version),
    )


async def _hammer(url: str, clients: int, per_client: int) -> None:
    async def one_client(k: int) -> None:
        client = grpcaio.InferenceServerClient(url)
        try:
            for i in range(per_client):
                arr = np.array([[f"please book a table for {k} people at {i} pm"]], dtype=object)
                tensor = grpcaio.InferInput("TEXT", [1, 1], "BYTES")
                tensor.set_data_from_numpy(arr)
                await client.infer("intent", [tensor], model_version="1", client_timeout=60)
        finally:
            await client.close()

    await asyncio.gather(*(one_client(k) for k in range(clients)))


def test_batches_form_at_32_concurrent_clients(triton):
    count0, exec0 = _counters(triton.metrics_url, "intent", "1")
    asyncio.run(_hammer(triton.grpc_url, clients=32, per_client=15))
    count1, exec1 = _counters(triton.metrics_url, "intent", "1")
    inferences, executions = count1 - count0, exec1 - exec0
    assert inferences == 32 * 15
    average = inferences / executions
    print(
        f"intent v1 at 32 concurrent gRPC clients: {inferences:.0f} inferences in "
        f"{executions:.0f} executions, average batch {average:.1f}"
    )
    assert average > 2.0
