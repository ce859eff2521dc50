"""The Triton client wrapper: deadlines, safe retries, error mapping (fake gRPC client)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from frontend.errors import DeadlineExceeded, Overloaded, UpstreamUnavailable
from frontend.settings import TritonSettings
from frontend.triton.client import TritonClient


class FakeResult:
    def as_numpy(self, name):
        return np.array([[b"ok"]], dtype=object)


class FakeGrpc:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = []

    async def infer(self, model, inputs, **kwargs):
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)
        return FakeResult()


def _client(fake, **settings) -> tuple[TritonClient, dict]:
    return fake, settings


def _run(pair):
    fake, settings = pair

    async def go():
        client = TritonClient(TritonSettings(**settings))  # the channel needs a running loop
        await client.close()
        client._client = fake  # type: ignore[assignment]
        return await client.infer_text("intent", "1", ["hi"], ("LABEL",), "rid-1")

    return asyncio.run(go())


def test_connect_failure_is_retried_once_then_succeeds():
    fake = FakeGrpc(
        [InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")]
    )
    result = _run(_client(fake))
    assert result.outputs["LABEL"][0, 0] == b"ok"
    assert len(fake.calls) == 2
    assert fake.calls[0]["request_id"] == "rid-1"
    assert 0 < fake.calls[0]["client_timeout"] <= 10


def test_queue_full_is_not_retried():
    fake = FakeGrpc(
        [InferenceServerException("Exceeds maximum queue size", "StatusCode.UNAVAILABLE")] * 3
    )
    with pytest.raises(Overloaded):
        _run(_client(fake))
    assert len(fake.calls) == 1


def test_retries_are_bounded():
    error = InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")
    fake = FakeGrpc([error] * 5)
    with pytest.raises(UpstreamUnavailable):
        _run(_client(fake, connect_retries=1))
    assert len(fake.calls) == 2


def test_per_model_deadline():
    fake = FakeGrpc([InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED")])
    with pytest.raises(DeadlineExceeded, match=r"within 0\.5 s"):
        _run(_client(fake, timeouts={"intent": 0.5}))
    assert fake.calls[0]["client_timeout"] <= 0.5
