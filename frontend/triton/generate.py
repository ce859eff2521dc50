"""One generation as a gRPC stream to the decoupled `chat` model.

The model answers: an admission response (PROMPT_TOKENS, and the prompt's logprob entries
when asked), one response per token of each choice (TEXT, COMPLETION_TOKENS, INDEX: the
choices interleave), one final response per choice (FINISH_REASON, TOOL_CALLS); or an
error, which ends every choice, whose message starts with its kind (`invalid:`,
`overloaded:`, `internal:`). The stream is over once each of the `n` choices has its
finish reason. Every read has a deadline; `cancel()` ends the gRPC call at once, which
Triton passes to the model as a cancelled request.

What goes in (`GenerationParams`) and what comes out (`GenerationStep`) are plain values:
the tensors are built and read here, and nothing above the triton package sees them.
Every response carries every output of the contract (tensors.GENERATION_OUTPUTS; the
catalog refuses at start-up a model whose card lacks one): a response without one is
unreadable, an upstream error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
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
    checks them; the model checks them again for callers that reach Triton directly).
    Every field after `stop` defaults to its neutral value, which is never sent."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None  # within Triton's INT64, non-negative
    stop: tuple[str, ...]
    n: int = 1
    logprobs: int | None = None  # top alternatives per generated token; None: off
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (echo)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias)
    min_tokens: int = 0
    ignore_eos: bool = False
    response_format: str | None = None  # JSON, OpenAI's shape
    tools: str | None = None  # JSON list, OpenAI's shape
    tool_choice: str | None = None  # JSON
    parallel_tool_calls: bool = True


# One logprob entry as the model writes it (DESIGN §3): id, token, bytes, logprob (None
# for a prompt's first token) and top_logprobs (entries without their own top list).
LogprobEntry = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GenerationStep:
    """One response of the stream: the admission (prompt_tokens known, no text yet; the
    prompt's logprob entries when asked), a token of choice `index` (its new text,
    possibly empty while a stop sequence may be forming), or the final one of a choice
    (finish_reason set, with any text held back until then and its tool calls)."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # of this choice so far
    finish_reason: str  # "" until the choice's final response
    index: int = 0
    logprobs: list[LogprobEntry] | None = None  # the tokens this response carries
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's tool call objects
    prompt_logprobs: list[LogprobEntry] | None = None  # the admission response only


@dataclass
class GenerationStream:
    model: str
    version: str
    # tritonclient's response iterator; its cancel() cancels the gRPC call.
    _responses: Any = field(repr=False)
    deadline: float = 0.0
    idle_timeout_s: float = 60.0
    n: int = 1  # choices: the stream is over when each has its finish reason
    finished: bool = False
    _admitted: bool = field(default=False, repr=False)
    _ended: set[int] = field(default_factory=set, repr=False)

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
        try:
            step = self._read(result)
        except (ValueError, TypeError) as exc:  # a model bug: not the caller's fault
            self.cancel()
            self.finished = True
            raise UpstreamError(f"model {self.model!r} sent an unreadable response") from exc
        if step.finish_reason:
            self._ended.add(step.index)
        if len(self._ended) >= self.n:
            # Done. Not cancel(): our side is already closed (one request, then the end of
            # the request iterator), and Triton 2.51 ends the stream itself; cancelling a
            # stream that has just ended can leave Triton holding the model (seen: a chat
            # model that no shutdown could unload for the whole exit timeout).
            self.finished = True
        return step

    def _read(self, result: Any) -> GenerationStep:
        admission, self._admitted = not self._admitted, True
        entries = _json_output(result, tensors.TOKEN_LOGPROBS)
        return GenerationStep(
            text=_output(result, tensors.GEN_TEXT).decode("utf-8"),
            prompt_tokens=int(_output(result, tensors.PROMPT_TOKENS)),
            completion_tokens=int(_output(result, tensors.COMPLETION_TOKENS)),
            finish_reason=_output(result, tensors.FINISH_REASON).decode(),
            index=int(_output(result, tensors.INDEX)),
            logprobs=None if admission else entries,
            tool_calls=_json_output(result, tensors.TOOL_CALLS),
            prompt_logprobs=entries if admission else None,
        )

    def cancel(self) -> None:
        self._responses.cancel()


def _output(result: Any, name: str) -> Any:
    """The one element of an output; ValueError when the response lacks it (tritonclient's
    as_numpy gives None) or it is empty."""
    value = result.as_numpy(name)
    if value is None or not value.size:
        raise ValueError(f"the response has no {name}")
    return value.reshape(-1)[0]


def _json_output(result: Any, name: str) -> list[Any] | None:
    """A JSON list output: "" (not asked, or nothing this response) -> None."""
    raw = _output(result, name)
    if not raw:
        return None
    parsed = json.loads(raw)
    if not isinstance(parsed, list):
        raise ValueError(f"{name} is not a JSON list")
    return parsed


def _tensor(name: str, value: np.ndarray, dtype: str) -> grpcaio.InferInput:
    tensor = grpcaio.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def _string(name: str, text: str) -> grpcaio.InferInput:
    return _tensor(name, np.array([text.encode()], dtype=np.object_), "BYTES")


def request_inputs(
    prompt: str | None,
    messages_json: str | None,
    params: GenerationParams,
    prompt_ids: Sequence[int] | None = None,
) -> list[grpcaio.InferInput]:
    """The request's tensors: PROMPT, MESSAGES (a JSON list) or PROMPT_IDS, then the
    sampling. SEED, STOP and every option after them only when set: the model's defaults
    are the neutral values, so a plain request is the tensors it always was."""
    inputs = []
    if prompt is not None:
        inputs.append(_string(tensors.PROMPT, prompt))
    if messages_json is not None:
        inputs.append(_string(tensors.MESSAGES, messages_json))
    if prompt_ids is not None:
        ids = np.array(list(prompt_ids), dtype=np.int64)
        inputs.append(_tensor(tensors.PROMPT_IDS, ids, "INT64"))
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
    return inputs + _option_inputs(params)


def _option_inputs(params: GenerationParams) -> list[grpcaio.InferInput]:
    """The options that are not neutral, each as its one-element tensor."""

    def int32(name: str, value: int) -> grpcaio.InferInput:
        return _tensor(name, np.array([value], dtype=np.int32), "INT32")

    def fp32(name: str, value: float) -> grpcaio.InferInput:
        return _tensor(name, np.array([value], dtype=np.float32), "FP32")

    def boolean(name: str, value: bool) -> grpcaio.InferInput:
        return _tensor(name, np.array([value], dtype=np.bool_), "BOOL")

    inputs = []
    if params.n != 1:
        inputs.append(int32(tensors.N, params.n))
    if params.logprobs is not None:
        inputs.append(int32(tensors.LOGPROBS, params.logprobs))
    if params.prompt_logprobs is not None:
        inputs.append(int32(tensors.PROMPT_LOGPROBS, params.prompt_logprobs))
    if params.presence_penalty != 0.0:
        inputs.append(fp32(tensors.PRESENCE_PENALTY, params.presence_penalty))
    if params.frequency_penalty != 0.0:
        inputs.append(fp32(tensors.FREQUENCY_PENALTY, params.frequency_penalty))
    if params.repetition_penalty != 1.0:
        inputs.append(fp32(tensors.REPETITION_PENALTY, params.repetition_penalty))
    if params.logit_bias:
        bias = json.dumps({str(token): value for token, value in params.logit_bias})
        inputs.append(_string(tensors.LOGIT_BIAS, bias))
    if params.min_tokens:
        inputs.append(int32(tensors.MIN_TOKENS, params.min_tokens))
    if params.ignore_eos:
        inputs.append(boolean(tensors.IGNORE_EOS, True))
    if params.response_format is not None:
        inputs.append(_string(tensors.RESPONSE_FORMAT, params.response_format))
    if params.tools is not None:
        inputs.append(_string(tensors.TOOLS, params.tools))
    if params.tool_choice is not None:
        inputs.append(_string(tensors.TOOL_CHOICE, params.tool_choice))
    if not params.parallel_tool_calls:
        inputs.append(boolean(tensors.PARALLEL_TOOL_CALLS, False))
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
    n: int = 1,
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
        n=n,
    )
