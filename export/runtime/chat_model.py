"""Triton python-backend model `chat` (copied into the repository as model.py).

Decoupled: each request gets one response when it is admitted (PROMPT_TOKENS set, TEXT
empty), one per generated token (TEXT is the new text, possibly empty while a stop
sequence may be forming), and a final one (flag FINAL, FINISH_REASON stop | length |
cancelled). Errors are final responses with a Triton error code: INVALID_ARG for bad
input, UNAVAILABLE when the slots and the queue are full, INTERNAL when generation fails.

The decode loop (`generation.ChatEngine`) runs in its own thread; `execute` only
validates and queues, so it returns at once and Triton keeps accepting requests.

Shutdown: Triton finalizes a model only once each of its requests has had its final
response, so a generation nobody cancels would hold Triton's stop (and this stub's CPU)
for its whole exit timeout (seen: 30 s, then SIGKILL). So the engine stops itself, every
sequence ending with a final error within one step, as soon as
- the embedded launcher announces the stop: it creates the file named by
  INFERGATE_TRITON_STOP_FILE just before it signals Triton (a stat per decode step, no
  call into Triton: Triton's own calls can block while it unloads models), or
- `ServerWatch` hears from Triton that the server or the model is no longer ready (a
  Triton stopped by someone else; best effort, for the same reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The python-backend stub ignores PYTHONPATH; the embedded launcher names the venv here.
for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from generation import ChatEngine, GenerationError, Limits, Metrics, Sampling  # noqa: E402

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

    def _send(self, text: str, completion: int, reason: str, final: bool) -> None:
        pb = self.pb
        tensors = [
            pb.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb.Tensor("PROMPT_TOKENS", np.array([self.prompt_tokens], dtype=np.int32)),
            pb.Tensor("COMPLETION_TOKENS", np.array([completion], dtype=np.int32)),
            pb.Tensor("FINISH_REASON", np.array([reason.encode()], dtype=np.object_)),
        ]
        flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        # The client may go away between our check and the send; the next step's
        # cancellation check removes the sequence.
        with contextlib.suppress(Exception):
            self.sender.send(pb.InferenceResponse(output_tensors=tensors), flags=flags)

    def admitted(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._send("", 0, "", final=False)

    def token(self, token_id: int, text: str, completion_tokens: int) -> None:
        self._send(text, completion_tokens, "", final=False)

    def finish(self, reason: str, text: str, completion_tokens: int) -> None:
        self._send(text, completion_tokens, reason, final=True)

    def fail(self, error: GenerationError) -> None:
        send_error(self.pb, self.sender, error)

    def cancelled(self) -> bool:
        return bool(self.sender.is_cancelled())


def send_error(pb: Any, sender: Any, error: GenerationError) -> None:
    code = getattr(pb.TritonError, _ERROR_CODES.get(error.code, "INTERNAL"))
    # The kind leads the message so that a caller without the code (a gRPC stream
    # carries only the text) can still tell overload from bad input.
    response = pb.InferenceResponse(error=pb.TritonError(f"{error.code}: {error}", code))
    with contextlib.suppress(Exception):
        sender.send(response, flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class ServerWatch:
    """While sequences are generating, asks Triton every `interval_s` whether this model
    is still ready. From the moment Triton stops (or unloads the model) the answer is no
    (or an error: "Server not ready"); seen twice in a row, once it had been ready, the
    engine is stopped: every sequence gets its final error within one step, so Triton's
    unload and exit do not wait for the generations to run out."""

    def __init__(
        self, ready: Callable[[], bool], engine: ChatEngine, interval_s: float = 0.2
    ) -> None:
        self._ready = ready
        self.engine = engine
        self.interval_s = interval_s
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-server-watch", daemon=True)

    def start(self) -> ServerWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        # Not joined: during Triton's stop a readiness call can block until the unload
        # is over, which is what finalize must not wait for.
        self._closed.set()

    def _asked(self) -> bool:
        try:
            return bool(self._ready())
        except Exception:  # "Server not ready" while Triton starts or stops
            return False

    def _run(self) -> None:
        seen_ready, misses = False, 0
        while not self._closed.wait(self.interval_s):
            if self.engine.stopping:
                return  # stopped another way (the launcher's announcement, finalize)
            # Idle, nothing can hold a stop: no question asked (once it was ready).
            if seen_ready and not self.engine.busy:
                misses = 0
                continue
            if self._asked():
                seen_ready, misses = True, 0
            elif seen_ready:
                misses += 1
                if misses >= 2:
                    self.engine.request_stop()
                    return


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


def _optional(pb: Any, request: Any, name: str) -> np.ndarray | None:
    tensor = pb.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _text(values: np.ndarray | None, name: str) -> str | None:
    if values is None:
        return None
    if values.size != 1:
        raise GenerationError("invalid", f"{name} takes exactly one element")
    try:
        raw = values[0]
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise GenerationError("invalid", f"{name} is not valid UTF-8") from None


def parse_request(pb: Any, request: Any, engine: ChatEngine) -> tuple[list[int], Sampling]:
    prompt = _text(_optional(pb, request, "PROMPT"), "PROMPT")
    messages_json = _text(_optional(pb, request, "MESSAGES"), "MESSAGES")
    messages = None
    if messages_json is not None:
        try:
            messages = json.loads(messages_json)
        except ValueError:
            raise GenerationError("invalid", "MESSAGES is not JSON") from None

    def scalar(name: str, default: Any) -> Any:
        values = _optional(pb, request, name)
        return default if values is None or values.size == 0 else values[0].item()

    stops = _optional(pb, request, "STOP")
    stop = tuple(
        s.decode("utf-8") if isinstance(s, bytes) else str(s)
        for s in ([] if stops is None else stops)
    )
    seed = scalar("SEED", None)
    sampling = Sampling(
        max_tokens=int(scalar("MAX_TOKENS", engine.limits.max_completion_tokens // 4)),
        temperature=float(scalar("TEMPERATURE", 0.0)),
        top_p=float(scalar("TOP_P", 1.0)),
        top_k=int(scalar("TOP_K", 0)),
        seed=None if seed is None else int(seed),
        stop=stop,
    )
    return engine.encode_prompt(prompt, messages), sampling  # submit() checks sampling


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
        name = args["model_name"]
        self.watch = ServerWatch(lambda: pb_utils.is_model_ready(name, version), self.engine)
        self.watch.start()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt_ids, sampling = parse_request(self.pb, request, self.engine)
                self.engine.submit(prompt_ids, sampling, ResponseSink(self.pb, sender))
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
