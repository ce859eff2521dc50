"""The one door to Triton: a reused gRPC channel, a deadline on every call, retries only
where safe, and gRPC status -> domain error at this boundary (`errors.py`).

Callers pass and get plain values (texts or named numpy arrays and output names,
`GenerationParams`, `GenerationStep`s); the client builds and reads the tensors, so nothing above
the triton package imports tritonclient. Tensor names are in `tensors.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from ..errors import Overloaded, UpstreamUnavailable
from ..settings import TritonSettings
from . import tensors
from .errors import map_error, not_sent
from .generate import (
    GenerationParams,
    GenerationStep,
    GenerationStream,
    LogprobEntry,
    open_stream,
    request_inputs,
)

# The values a caller passes and gets back, importable from this one module.
__all__ = [
    "ADMIN_METADATA",
    "GenerationParams",
    "GenerationStep",
    "GenerationStream",
    "InferResult",
    "LogprobEntry",
    "TritonClient",
]

# Triton's restricted APIs want this gRPC metadata (export/triton_launcher.py: its
# ADMIN_HEADER with the prefix Triton adds) carrying the launch's key.
ADMIN_METADATA = "triton-grpc-protocol-infergate-triton-admin"


@dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    triton_seconds: float


class TritonClient:
    def __init__(
        self,
        settings: TritonSettings,
        grpc: grpcaio.InferenceServerClient | None = None,
        *,
        priority: int = 0,
    ) -> None:
        """`grpc`: a client to use instead of opening a channel (tests pass a fake of it).
        `priority`: the Triton priority level every `infer` request carries (0: the
        model's default level, online traffic's; batch jobs' client sends a lower one)."""
        self.settings = settings
        self.priority = priority
        key = settings.admin_key
        self._admin = {ADMIN_METADATA: key.get_secret_value()} if key is not None else None
        self._client = grpc or grpcaio.InferenceServerClient(
            settings.url,
            channel_args=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", settings.max_reconnect_backoff_ms),
            ],
        )

    async def close(self) -> None:
        await self._client.close()

    async def infer_text(
        self,
        model: str,
        version: str,
        texts: list[str],
        outputs: tuple[str, ...],
        request_id: str,
        timeout: float | None = None,
    ) -> InferResult:
        """One row per text (UTF-8, the TEXT tensor)."""
        batch = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        return await self.infer(model, version, {tensors.TEXT: batch}, outputs, request_id, timeout)

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        request_id: str,
        timeout: float | None = None,
    ) -> InferResult:
        """Any batched model: named input arrays (object arrays of bytes go as BYTES, the
        numeric ones as their own type: INT32, FP32, BOOL...), named outputs back. The
        deadline is `timeout`, or the model's configured one (TritonSettings.timeout_for)."""
        sent = [_tensor(name, array) for name, array in inputs.items()]
        requested = [grpcaio.InferRequestedOutput(name) for name in outputs]
        timeout = self.settings.timeout_for(model) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._client.infer(
                    model,
                    sent,
                    model_version=version,
                    outputs=requested,
                    request_id=request_id,
                    priority=self.priority,
                    client_timeout=max(deadline - time.monotonic(), 0.001),
                )
            except InferenceServerException as exc:
                error = map_error(exc, model, version, timeout)
                retry = (
                    isinstance(error, UpstreamUnavailable)
                    and not isinstance(error, Overloaded)
                    and not_sent(exc)
                    and attempt < self.settings.connect_retries
                    and deadline - time.monotonic() > 0.1
                )
                if not retry:
                    raise error from exc
                attempt += 1
                await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            return InferResult({n: result.as_numpy(n) for n in outputs}, elapsed)

    def generate(
        self,
        model: str,
        version: str,
        params: GenerationParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        prompt_ids: Sequence[int] | None = None,
        request_id: str,
        timeout_s: float,
        idle_timeout_s: float,
    ) -> GenerationStream:
        """A streamed generation (decoupled model) on the shared channel, of a raw prompt,
        of chat messages or of a prompt as token ids (exactly one). `timeout_s` bounds the
        whole stream, `idle_timeout_s` each wait for the next step."""
        messages_json = None if messages is None else json.dumps([dict(m) for m in messages])
        return open_stream(
            self._client,
            model,
            version,
            request_inputs(prompt, messages_json, params, prompt_ids),
            request_id=request_id,
            timeout_s=timeout_s,
            idle_timeout_s=idle_timeout_s,
            n=params.n,
        )

    async def server_ready(self) -> bool:
        try:
            return bool(
                await self._client.is_server_ready(client_timeout=self.settings.health_timeout_s)
            )
        except InferenceServerException:
            return False

    async def model_ready(self, model: str, version: str = "") -> bool:
        try:
            return bool(
                await self._client.is_model_ready(
                    model, version, client_timeout=self.settings.health_timeout_s
                )
            )
        except InferenceServerException:
            return False

    async def repository_index(self) -> list[dict[str, str]]:
        """[{name, version, state, reason}] from Triton; [] when unreachable."""
        try:
            index = await self._client.get_model_repository_index(
                headers=self._admin, as_json=True, client_timeout=self.settings.health_timeout_s
            )
        except InferenceServerException:
            return []
        return [dict(m) for m in index.get("models", [])]


def _tensor(name: str, array: np.ndarray) -> grpcaio.InferInput:
    # An object array (of bytes) is BYTES, the numeric ones their own type.
    tensor = grpcaio.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor
