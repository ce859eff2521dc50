"""The one door to Triton: a reused gRPC channel, a deadline on every call, retries only
where safe, and gRPC status -> domain error at this boundary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from ..errors import (
    DeadlineExceeded,
    InputInvalid,
    ModelUnavailable,
    Overloaded,
    UpstreamError,
    UpstreamUnavailable,
)
from ..settings import TritonSettings

if TYPE_CHECKING:
    from .generate import GenerationStream

# Triton's restricted APIs want this gRPC metadata (export/triton_launcher.py: its
# ADMIN_HEADER with the prefix Triton adds) carrying the launch's key.
ADMIN_METADATA = "triton-grpc-protocol-infergate-triton-admin"

# UNAVAILABLE with one of these means the request never reached Triton: safe to retry.
_NOT_SENT = ("failed to connect", "connection refused", "connect failed", "dns resolution")


@dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    triton_seconds: float


class TritonClient:
    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        key = settings.admin_key
        self._admin = {ADMIN_METADATA: key.get_secret_value()} if key is not None else None
        self._client = grpcaio.InferenceServerClient(
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
    ) -> InferResult:
        batch = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = grpcaio.InferInput("TEXT", list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        requested = [grpcaio.InferRequestedOutput(name) for name in outputs]
        timeout = self.settings.timeout_for(model)
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._client.infer(
                    model,
                    [tensor],
                    model_version=version,
                    outputs=requested,
                    request_id=request_id,
                    client_timeout=max(deadline - time.monotonic(), 0.001),
                )
            except InferenceServerException as exc:
                error = map_error(exc, model, version, timeout)
                retry = (
                    isinstance(error, UpstreamUnavailable)
                    and not isinstance(error, Overloaded)
                    and _not_sent(exc)
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
        inputs: list[grpcaio.InferInput],
        request_id: str,
        timeout_s: float,
        idle_timeout_s: float,
    ) -> GenerationStream:
        """A streamed generation (decoupled model) on the shared channel."""
        from .generate import open_stream

        return open_stream(
            self._client, model, version, inputs, request_id, timeout_s, idle_timeout_s
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


def _not_sent(exc: InferenceServerException) -> bool:
    message = (exc.message() or "").lower()
    return any(marker in message for marker in _NOT_SENT)


def map_error(exc: InferenceServerException, model: str, version: str, timeout: float) -> Exception:
    status = exc.status() or ""
    message = exc.message() or ""
    lowered = message.lower()
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded(f"model {model!r} did not answer within {timeout:g} s")
    if "UNAVAILABLE" in status:
        if "queue size" in lowered:
            return Overloaded(f"model {model!r} is overloaded; retry shortly")
        if "unknown model" in lowered or "not found" in lowered or "not ready" in lowered:
            return _not_found(model, version, lowered)  # Triton is up, this model is not
        return UpstreamUnavailable("the inference server is unavailable; retry shortly")
    if "INVALID_ARGUMENT" in status:
        if "unknown model" in lowered or "is not found" in lowered:
            return _not_found(model, version, lowered)
        return InputInvalid(_strip_request_id(message))
    if "NOT_FOUND" in status or "unknown model" in lowered:
        return _not_found(model, version, lowered)
    if "CANCELLED" in status:
        return UpstreamUnavailable("the inference request was cancelled")
    if "unavailable" in lowered or "not ready" in lowered:
        return UpstreamUnavailable(f"model {model!r} is not ready; retry shortly")
    return UpstreamError(f"inference failed for model {model!r}")


def _not_found(model: str, version: str, lowered: str) -> Exception:
    # Every call here is for a model and version the catalog has (unknown ones are 404
    # before Triton is asked), so "not found" from Triton means "not loaded": 503.
    what = f"model {model!r}" + (f" version {version}" if version else "")
    return ModelUnavailable(f"{what} is not loaded in the inference server; retry later")


def _strip_request_id(message: str) -> str:
    # Triton prefixes "[request id: …] "; the envelope carries the id already.
    if message.startswith("[request id:"):
        return message.split("] ", 1)[-1]
    return message
