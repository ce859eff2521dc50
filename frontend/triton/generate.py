"""One generation as a gRPC stream to the decoupled `chat` model.

The model answers: an admission response (PROMPT_TOKENS), one response per token
(TEXT, COMPLETION_TOKENS), a final one (FINISH_REASON); or a final error whose message
starts with its kind (`invalid:`, `overloaded:`, `internal:`). Every read has a
deadline; `cancel()` ends the gRPC call at once, which Triton passes to the model as a
cancelled request.

What goes in (`GenerationParams`) and what comes out (`GenerationStep`) are plain values:
the tensors are built and read here, and nothing above the triton package sees them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc._utils import get_error_grpc

from ..errors import DeadlineExceeded, UpstreamError
from . import tensors
from .errors import map_error, model_error


@dataclass(frozen=True)
class GenerationParams:
    """Sampling for one generation, already within the model's bounds (the request schema
    checks them; the model checks them again for callers that reach Triton directly)."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None  # within Triton's INT64, non-negative
    stop: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GenerationStep:
    """One response of the stream: the admission (prompt_tokens known, no text yet), a
    token (its new text, possibly empty while a stop sequence may be forming), or the
    final one (finish_reason set, with any text held back until then)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "" until the final response


@dataclass
class GenerationStream:
    model: str
    version: str
    # tritonclient's response iterator; its cancel() cancels the gRPC call.
    _responses: Any = field(repr=False)
    deadline: float = 0.0
    idle_timeout_s: float = 60.0
    finished: bool = False

    async def next(self, timeout_s: float | None = None) -> GenerationStep | None:
        """The next response, or None after the final one."""
        if self.finished:
            return None
        remaining = self.deadline - time.monotonic()
        wait = min(remaining, timeout_s or self.idle_timeout_s)
        if wait <= 0:
            self.cancel()
            raise DeadlineExceeded(f"model {self.model!r} did not finish in time")
        try:
            result, error = await asyncio.wait_for(anext(self._responses), wait)
        except TimeoutError:
            self.cancel()
            raise DeadlineExceeded(f"model {self.model!r} stopped answering") from None
        except StopAsyncIteration:
            self.finished = True
            raise UpstreamError(f"model {self.model!r} ended the stream early") from None
        except grpc.RpcError as exc:  # Triton went away mid-stream, or the deadline hit
            self.finished = True
            raise map_error(get_error_grpc(exc), self.model, self.version, 0) from exc
        if error is not None:
            self.finished = True
            raise model_error(error, self.model) from error
        step = GenerationStep(
            text=result.as_numpy(tensors.GEN_TEXT)[0].decode("utf-8"),
            prompt_tokens=int(result.as_numpy(tensors.PROMPT_TOKENS)[0]),
            completion_tokens=int(result.as_numpy(tensors.COMPLETION_TOKENS)[0]),
            finish_reason=result.as_numpy(tensors.FINISH_REASON)[0].decode(),
        )
        if step.finish_reason:
            # Done. Not cancel(): our side is already closed (one request, then the end of
            # the request iterator), and Triton 2.51 ends the stream itself; cancelling a
            # stream that has just ended can leave Triton holding the model (seen: a chat
            # model that no shutdown could unload for the whole exit timeout).
            self.finished = True
        return step

    def cancel(self) -> None:
        self._responses.cancel()


def _tensor(name: str, value: np.ndarray, dtype: str) -> grpcaio.InferInput:
    tensor = grpcaio.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def request_inputs(
    prompt: str | None, messages_json: str | None, params: GenerationParams
) -> list[grpcaio.InferInput]:
    """The request's tensors: PROMPT or MESSAGES (a JSON list), then the sampling; SEED
    and STOP only when set (the model's defaults otherwise)."""
    inputs = []
    if prompt is not None:
        raw = np.array([prompt.encode()], dtype=np.object_)
        inputs.append(_tensor(tensors.PROMPT, raw, "BYTES"))
    if messages_json is not None:
        raw = np.array([messages_json.encode()], dtype=np.object_)
        inputs.append(_tensor(tensors.MESSAGES, raw, "BYTES"))
    inputs += [
        _tensor(tensors.MAX_TOKENS, np.array([params.max_tokens], dtype=np.int32), "INT32"),
        _tensor(tensors.TEMPERATURE, np.array([params.temperature], dtype=np.float32), "FP32"),
        _tensor(tensors.TOP_P, np.array([params.top_p], dtype=np.float32), "FP32"),
        _tensor(tensors.TOP_K, np.array([params.top_k], dtype=np.int32), "INT32"),
    ]
    if params.seed is not None:
        inputs.append(_tensor(tensors.SEED, np.array([params.seed], dtype=np.int64), "INT64"))
    if params.stop:
        stops = np.array([s.encode() for s in params.stop], dtype=np.object_)
        inputs.append(_tensor(tensors.STOP, stops, "BYTES"))
    return inputs


def open_stream(
    client: grpcaio.InferenceServerClient,
    model: str,
    version: str,
    inputs: list[grpcaio.InferInput],
    *,
    request_id: str,
    timeout_s: float,
    idle_timeout_s: float,
) -> GenerationStream:
    async def one_request() -> AsyncIterator[dict]:
        yield {
            "model_name": model,
            "model_version": version,
            "inputs": inputs,
            "request_id": request_id,
        }

    responses = client.stream_infer(one_request(), stream_timeout=timeout_s)
    return GenerationStream(
        model,
        version,
        _responses=responses,
        deadline=time.monotonic() + timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
