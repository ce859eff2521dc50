"""Triton python-backend model `chat` (copied into the repository as model.py).

Decoupled: each request gets one response when it is admitted (INDEX 0, PROMPT_TOKENS
set, TEXT empty; TOKEN_LOGPROBS the prompt's entries when PROMPT_LOGPROBS asks), then for
each of its N choices (INDEX) one per generated token (TEXT is the new text, possibly
empty while a stop sequence or a tool call may be forming; TOKEN_LOGPROBS its entry when
LOGPROBS asks) and one that ends it (FINISH_REASON stop | length | tool_calls |
cancelled, TOOL_CALLS the calls it made). Choices interleave; the response that ends the
last one carries the flag FINAL. Errors are final responses with a Triton error code
(and end every choice): INVALID_ARG for bad input, UNAVAILABLE when the slots and the
queue are full, INTERNAL when generation fails.

The decode loop (`generation.ChatEngine`) runs in its own thread; `execute` only
validates and queues, so it returns at once and Triton keeps accepting requests.

Shutdown: Triton finalizes a model only once each of its requests has had its final
response, so a generation nobody cancels would hold Triton's stop (and this stub's CPU)
for its whole exit timeout (seen: 30 s, then SIGKILL). So the engine stops itself, every
sequence ending with a final error within one step, as soon as
- the embedded launcher announces the stop: it creates the file named by
  INFERGATE_TRITON_STOP_FILE just before it signals Triton (a stat per decode step, no
  call into Triton: Triton's own calls can block while it unloads models), or
- `ServerWatch` hears from Triton's HTTP endpoint that the model is no longer ready (a
  Triton stopped by someone else; best effort). Asked over HTTP, not through
  `pb_utils.is_model_ready`: that call from a second thread of the stub crashed Triton's
  python backend (`boost::interprocess::lock_exception` in ModelInstanceExecute, on 4 of
  12 starts whose first chat request met one of its calls; 0 of 12 without them).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The python-backend stub ignores PYTHONPATH; the embedded launcher names the venv here.
for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from chat_inputs import parse_request  # noqa: E402
from engine_types import Entries, Limits, Metrics  # noqa: E402
from generation import ChatEngine, GenerationError  # noqa: E402
from sampling import Sampling  # noqa: E402, F401  re-exported: callers build requests with it
from server_watch import ServerWatch, http_ready, model_ready_url  # noqa: E402

_ERROR_CODES = {"invalid": "INVALID_ARG", "overloaded": "UNAVAILABLE", "internal": "INTERNAL"}


class TritonMetrics(Metrics):
    """The engine's counters on Triton's metrics port (families must outlive metrics)."""

    def __init__(self, pb: Any, labels: dict[str, str]):
        def family(name: str, kind: Any, description: str) -> tuple[Any, Any]:
            fam = pb.MetricFamily(name=name, description=description, kind=kind)
            return fam, fam.Metric(labels=labels)

        gauge, counter = pb.MetricFamily.GAUGE, pb.MetricFamily.COUNTER
        self._families = [
            family("infergate_chat_active_sequences", gauge, "Sequences in the decode batch"),
            family("infergate_chat_queued_sequences", gauge, "Sequences waiting for a slot"),
            family("infergate_chat_generated_tokens_total", counter, "Tokens sampled"),
            family("infergate_chat_decode_steps_total", counter, "Batched decode steps"),
            family("infergate_chat_decode_rows_total", counter, "Sequences over all steps"),
            family("infergate_chat_cancelled_total", counter, "Sequences stopped on cancel"),
            family("infergate_chat_rejected_total", counter, "Requests refused: overloaded"),
            family("infergate_chat_failed_total", counter, "Sequences ended by an error"),
        ]
        m = [metric for _, metric in self._families]
        self._active, self._queued, self._tokens, self._steps = m[0], m[1], m[2], m[3]
        self._rows, self._cancelled, self._rejected, self._failed = m[4], m[5], m[6], m[7]

    def set_active(self, n: int) -> None:
        self._active.set(n)

    def set_queued(self, n: int) -> None:
        self._queued.set(n)

    def tokens(self, n: int) -> None:
        self._tokens.increment(n)

    def step(self, rows: int) -> None:
        self._steps.increment(1)
        self._rows.increment(rows)

    def cancelled(self) -> None:
        self._cancelled.increment(1)

    def rejected(self) -> None:
        self._rejected.increment(1)

    def failed(self) -> None:
        self._failed.increment(1)


class ResponseSink:
    """Turns engine events into decoupled responses on one request's sender."""

    def __init__(self, pb: Any, sender: Any):
        self.pb = pb
        self.sender = sender
        self.prompt_tokens = 0

    def _send(
        self,
        index: int,
        text: str,
        completion: int,
        reason: str = "",
        logprobs: Entries | None = None,
        tool_calls: Entries | None = None,
        final: bool = False,
    ) -> None:
        pb = self.pb

        def string(name: str, value: str) -> Any:
            return pb.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))

        def int32(name: str, value: int) -> Any:
            return pb.Tensor(name, np.array([value], dtype=np.int32))

        tensors = [
            string("TEXT", text),
            int32("PROMPT_TOKENS", self.prompt_tokens),
            int32("COMPLETION_TOKENS", completion),
            string("FINISH_REASON", reason),
            int32("INDEX", index),
            string("TOKEN_LOGPROBS", "" if logprobs is None else _json(logprobs)),
            string("TOOL_CALLS", "" if not tool_calls else _json(tool_calls)),
        ]
        flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        # The client may go away between our check and the send; the next step's
        # cancellation check removes the sequence.
        with contextlib.suppress(Exception):
            self.sender.send(pb.InferenceResponse(output_tensors=tensors), flags=flags)

    def admitted(self, prompt_tokens: int, prompt_logprobs: Entries | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self._send(0, "", 0, logprobs=prompt_logprobs)

    def token(
        self, index: int, token_id: int, text: str, completion_tokens: int, logprobs: Entries | None
    ) -> None:
        self._send(index, text, completion_tokens, logprobs=logprobs)

    def finish(
        self,
        index: int,
        reason: str,
        text: str,
        completion_tokens: int,
        tool_calls: Entries | None,
        last: bool,
    ) -> None:
        self._send(index, text, completion_tokens, reason, tool_calls=tool_calls, final=last)

    def fail(self, error: GenerationError) -> None:
        send_error(self.pb, self.sender, error)

    def cancelled(self) -> bool:
        return bool(self.sender.is_cancelled())


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def send_error(pb: Any, sender: Any, error: GenerationError) -> None:
    code = getattr(pb.TritonError, _ERROR_CODES.get(error.code, "INTERNAL"))
    # The kind leads the message so that a caller without the code (a gRPC stream
    # carries only the text) can still tell overload from bad input.
    response = pb.InferenceResponse(error=pb.TritonError(f"{error.code}: {error}", code))
    with contextlib.suppress(Exception):
        sender.send(response, flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


# A test-only hook (the failure tests' private build): the engine raises for one seed.
# It acts only where the Triton process was started with this variable set to 1, so a
# config copied from a test into a real repository cannot break a real model: there it
# fails the load, saying why.
TEST_HOOKS_ENV = "INFERGATE_TEST_HOOKS"


def fail_on_seed_hook(params: dict[str, str], environ: Any) -> int | None:
    raw = params.get("test_fail_on_seed", "")
    if not raw:
        return None
    if environ.get(TEST_HOOKS_ENV) != "1":
        raise ValueError(
            f"parameter test_fail_on_seed is a test-only hook; it acts only when Triton runs "
            f"with {TEST_HOOKS_ENV}=1 (remove it from this model's config.pbtxt)"
        )
    return int(raw)


def _stop_file() -> Callable[[], bool] | None:
    """The embedded launcher's stop announcement: this file exists once it is stopping."""
    path = os.environ.get("INFERGATE_TRITON_STOP_FILE")
    if not path:
        return None
    return lambda: os.path.exists(path)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version = str(args["model_version"])
        version_dir = Path(args["model_repository"]) / version
        limits = Limits(
            slots=int(params["slots"]),
            queue=int(params["queue"]),
            max_prompt_tokens=int(params["max_prompt_tokens"]),
            max_completion_tokens=int(params["max_completion_tokens"]),
            max_context=int(params["max_context"]),
        )
        labels = {"model": args["model_name"], "version": version}
        fail_on_seed = fail_on_seed_hook(params, os.environ)
        self.engine = ChatEngine(
            version_dir,
            limits,
            threads=int(params.get("ort_intra_op_threads", "2")),
            provider=params.get("ort_provider", "cpu"),
            metrics=TritonMetrics(pb_utils, labels),
            fail_on_seed=fail_on_seed,
            stop_signal=_stop_file(),
        ).start()
        url = model_ready_url(os.environ, params, args["model_name"], version)
        self.watch = ServerWatch(http_ready(url), self.engine).start()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                parsed = parse_request(self.pb, request, self.engine)
                self.engine.submit(
                    parsed.prompt_ids,
                    parsed.sampling,
                    ResponseSink(self.pb, sender),
                    grammar=parsed.grammar,
                    tools=parsed.tools,
                )
            except GenerationError as exc:
                send_error(self.pb, sender, exc)
            except Exception as exc:  # never leave a request without a final response
                send_error(self.pb, sender, GenerationError("internal", str(exc)))
        return None

    def finalize(self) -> None:
        # Normally every request has ended by now; whatever is left ends with an error,
        # within one step, and the ONNX session is let go before the stub exits.
        self.watch.close()
        self.engine.stop()
